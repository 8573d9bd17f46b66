"""Registry models: exact parameter counts of the lab's CNNs, forward/backward for every model."""

from __future__ import annotations

import pytest
import torch

from kdlab.errors import ConfigError
from kdlab.models import count_params, create_model, list_models


@pytest.mark.parametrize(
    ("name", "shape", "classes", "expected"),
    [
        ("lab-cnn-teacher", (3, 224, 224), 2, 9_568_898),  # the lab's Keras summary
        ("lab-cnn-student", (3, 224, 224), 2, 789_442),
        ("lab-cnn-teacher", (1, 28, 28), 10, 200_778),  # same padding (small-input rule)
        ("lab-cnn-student", (1, 28, 28), 10, 54_410),
        ("lab-cnn-teacher", (1, 8, 8), 10, 200_778),  # same padding, 1-px pool left out
        ("lab-cnn-student", (1, 8, 8), 10, 3_210),
    ],
)
def test_exact_parameter_counts(name: str, shape: tuple[int, ...], classes: int, expected: int) -> None:
    assert count_params(create_model(name, num_classes=classes, input_shape=shape)) == expected


def test_teacher_padding_rule() -> None:
    big = create_model("lab-cnn-teacher", num_classes=2, input_shape=(3, 224, 224))
    small = create_model("lab-cnn-teacher", num_classes=10, input_shape=(1, 28, 28))
    assert {m.padding for m in big.modules() if isinstance(m, torch.nn.Conv2d)} == {(0, 0)}
    assert {m.padding for m in small.modules() if isinstance(m, torch.nn.Conv2d)} == {(1, 1)}
    pools = sum(
        isinstance(m, torch.nn.MaxPool2d)
        for m in create_model("lab-cnn-teacher", num_classes=10, input_shape=(1, 8, 8)).modules()
    )
    assert pools == 3


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith(("lab-rnn", "text-", "bag-"))])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 48, 48)])
def test_image_models_forward_backward(name: str, shape: tuple[int, ...]) -> None:
    model = create_model(name, num_classes=5, input_shape=shape)
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match="did you mean 'lab-cnn-teacher'"):
        create_model("lab-cnn-teachr", num_classes=2, input_shape=(1, 8, 8))


def test_image_model_on_wrong_input_shape_is_config_error() -> None:
    with pytest.raises(ConfigError, match="image inputs"):
        create_model("lab-cnn-student", num_classes=2, input_shape=(200,))
