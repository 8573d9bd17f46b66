"""Text models: the IMDB lab pair's exact PyTorch parameter counts, padding invariance, shapes."""

from __future__ import annotations

import pytest
import torch

from kdlab.errors import ConfigError
from kdlab.models import count_params, create_model

TEXT_MODELS = ["lab-rnn-teacher", "lab-rnn-student", "text-cnn-teacher", "bag-teacher", "bag-student"]


@pytest.mark.parametrize(
    ("name", "vocab", "classes", "expected"),
    [
        # Keras: 2,857,474 and 1,323,778; PyTorch's LSTM has a second bias vector, 8·units more
        # per bidirectional layer: +8·64 = 512 and +8·32 = 256.
        ("lab-rnn-teacher", 20_000, 2, 2_857_986),
        ("lab-rnn-student", 20_000, 2, 1_324_034),
        ("lab-rnn-teacher", 1_000, 5, 1_000 * 128 + 99_328 + 198_144 + 256 * 5 + 5),
        ("lab-rnn-student", 1_000, 5, 1_000 * 64 + 25_088 + 18_816 + 64 * 5 + 5),
        ("bag-student", 20_000, 2, 20_000 * 16 + 16 * 2 + 2),
        ("bag-teacher", 20_000, 2, 20_000 * 64 + 64 * 64 + 64 + 64 * 2 + 2),
        ("text-cnn-teacher", 20_000, 2, 20_000 * 64 + 64 * 128 * 5 + 128 + 128 * 2 + 2),
    ],
)
def test_exact_parameter_counts(name: str, vocab: int, classes: int, expected: int) -> None:
    model = create_model(name, num_classes=classes, input_shape=(200,), vocab_size=vocab)
    assert count_params(model) == expected


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_does_not_change_logits(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_shape=(40,), vocab_size=50).eval()
    lengths = [7, 1, 25, 40]
    ids = torch.zeros(4, 40, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, 50, (n,))
    with torch.no_grad():
        base = model(ids)
        more = model(torch.cat([ids, torch.zeros(4, 33, dtype=torch.long)], dim=1))
        # each review alone, with no padding at all
        alone = torch.cat([model(ids[row : row + 1, :n]) for row, n in enumerate(lengths)])
        # a different neighbour changes nothing either (no leak across the batch)
        swapped = model(ids[[1, 0, 2, 3]])[[1, 0, 2, 3]]
    assert torch.allclose(base, more, atol=1e-5)
    assert torch.allclose(base, alone, atol=1e-5)
    assert torch.allclose(base, swapped, atol=1e-5)
    # the token after the padding boundary matters: changing a real token changes the output
    ids[0, 3] = (ids[0, 3] % 49) + 1
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0], base[0])


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_forward_backward(name: str) -> None:
    model = create_model(name, num_classes=4, input_shape=(12,), vocab_size=30)
    ids = torch.randint(0, 30, (5, 12))
    ids[:, 0] = 2  # at least one real token per row
    out = model(ids)
    assert out.shape == (5, 4)
    out.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    emb = next(g for n, g in grads.items() if n.startswith("embedding"))
    assert torch.count_nonzero(emb[0]) == 0  # the padding row never learns


def test_empty_text_still_gives_logits() -> None:
    model = create_model("lab-rnn-student", num_classes=2, input_shape=(8,), vocab_size=30).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 8, dtype=torch.long))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_model_needs_text_data(name: str) -> None:
    with pytest.raises(ConfigError, match="token-id inputs"):
        create_model(name, num_classes=2, input_shape=(1, 8, 8), vocab_size=30)
    with pytest.raises(ConfigError, match="vocabulary size"):
        create_model(name, num_classes=2, input_shape=(20,))
