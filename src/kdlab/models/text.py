"""Text classifiers over token ids (``[N, L]`` int64, 0 = padding at the end of each row).

* ``lab-rnn-teacher`` / ``lab-rnn-student``: the classic IMDB lab's pair, Embedding →
  BiLSTM (all steps) → BiGRU (final states) → Dense. Sequences are *packed*, so the recurrent
  layers never see padding: the same text gives the same logits whatever its padded length.
  Parameter counts at vocabulary 20,000 and 2 classes: 2,857,986 and 1,324,034. Keras' originals
  have 2,857,474 and 1,323,778: PyTorch's LSTM keeps two bias vectors (``b_ih``, ``b_hh``), i.e.
  4·units more per direction, 8·units per bidirectional layer (64 → 512, 32 → 256). The GRU
  matches Keras' ``reset_after=True`` exactly.
* ``text-cnn-teacher``: Embedding → Conv1d(k=5, ReLU) → max over the real tokens → Dense; a
  teacher that trains fast on CPU cores.
* ``bag-teacher`` / ``bag-student``: mean of the token embeddings (padding excluded) → Dense;
  the fastest pair, for quick runs and tests.

Every model here is padding-invariant: the padding embedding (row 0) is a fixed zero vector and
is left out of every pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from kdlab.models.registry import register_model


def _text_shape(input_shape: Sequence[int], vocab_size: int | None) -> tuple[int, int]:
    if len(input_shape) != 1:
        raise ValueError(f"needs token-id inputs (L,), got shape {tuple(input_shape)}: use it with a text dataset")
    if vocab_size is None or vocab_size < 2:
        raise ValueError(f"needs the vocabulary size of a text dataset (got {vocab_size})")
    return int(input_shape[0]), int(vocab_size)


def lengths_of(ids: Tensor) -> Tensor:
    """Real tokens per row (ids != 0), at least 1 so an empty text still has one (padding) step."""
    return (ids != 0).sum(dim=1).clamp_(min=1)


class LabRNN(nn.Module):
    """Embedding(vocab, emb) → BiLSTM(lstm, all steps) → BiGRU(gru, final states) → Linear(classes).

    The GRU's output is its last forward state concatenated with its last backward state (the
    backward direction ends at the first token), as Keras' ``Bidirectional(GRU(...))`` returns.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, emb: int, lstm: int, gru: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, lstm, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(2 * lstm, gru, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * gru, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        lengths = lengths_of(ids).cpu()  # pack_padded_sequence wants lengths on the CPU
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        seq, _ = self.lstm(packed)
        # The GRU takes the LSTM's packed output directly: no padded step ever enters either layer.
        _, h = self.gru(seq)  # h: [2 directions, N, gru], already in the input's row order
        return self.head(torch.cat([h[0], h[1]], dim=-1))


class TextCNN(nn.Module):
    """Embedding → Conv1d(width, kernel, 'same' zero padding, ReLU) → max over real tokens → Dropout → Linear.

    The padding embedding is zero, exactly what the convolution's own zero padding adds, so
    positions next to the end of a text see the same inputs however much padding follows.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, emb: int, width: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb, padding_idx=0)
        self.conv = nn.Conv1d(emb, width, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        h = torch.relu(self.conv(self.embedding(ids).transpose(1, 2)))  # [N, width, L]
        steps = torch.arange(ids.shape[1], device=ids.device)
        real = steps[None, :] < lengths_of(ids)[:, None]  # [N, L]; padding positions never win the max
        pooled = h.masked_fill(~real[:, None, :], float("-inf")).amax(dim=-1)
        return self.head(self.dropout(pooled))


class BagOfEmbeddings(nn.Module):
    """Mean of the real tokens' embeddings (``nn.EmbeddingBag``, padding excluded) → optional ReLU
    hidden layer → Linear(classes)."""

    def __init__(self, vocab_size: int, num_classes: int, *, emb: int, hidden: int | None = None) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, emb, mode="mean", padding_idx=0)
        layers: list[nn.Module] = []
        if hidden is not None:
            layers += [nn.Linear(emb, hidden), nn.ReLU()]
            emb = hidden
        layers.append(nn.Linear(emb, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.embedding(ids))


@register_model(
    "lab-rnn-teacher", kind="text", description="the IMDB lab's teacher: Embedding(128)-BiLSTM(64)-BiGRU(128)"
)
def lab_rnn_teacher(*, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None) -> nn.Module:
    """The IMDB lab's teacher: Embedding(vocab, 128)-BiLSTM(64)-BiGRU(128)-Dense. 2,857,986 parameters
    at vocabulary 20,000, 2 classes (Keras: 2,857,474)."""
    _, vocab = _text_shape(input_shape, vocab_size)
    return LabRNN(vocab, num_classes, emb=128, lstm=64, gru=128)


@register_model(
    "lab-rnn-student", kind="text", description="the IMDB lab's student: Embedding(64)-BiLSTM(32)-BiGRU(32)"
)
def lab_rnn_student(*, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None) -> nn.Module:
    """The IMDB lab's student: Embedding(vocab, 64)-BiLSTM(32)-BiGRU(32)-Dense. 1,324,034 parameters
    at vocabulary 20,000, 2 classes (Keras: 1,323,778)."""
    _, vocab = _text_shape(input_shape, vocab_size)
    return LabRNN(vocab, num_classes, emb=64, lstm=32, gru=32)


@register_model(
    "text-cnn-teacher", kind="text", description="quick text teacher: Embedding(64)-Conv1d(128, k=5)-max-pool"
)
def text_cnn_teacher(*, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None) -> nn.Module:
    """Quick text teacher: Embedding(vocab, 64)-Conv1d(128, k=5)-max-pool-Dropout(0.5)-Dense."""
    _, vocab = _text_shape(input_shape, vocab_size)
    return TextCNN(vocab, num_classes, emb=64, width=128, kernel=5, dropout=0.5)


@register_model(
    "bag-teacher", kind="text", description="bag of embeddings: mean Embedding(64)-Dense(64)-Dense(classes)"
)
def bag_teacher(*, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None) -> nn.Module:
    """Bag of embeddings, larger: mean Embedding(vocab, 64)-Dense(64, ReLU)-Dense(classes)."""
    _, vocab = _text_shape(input_shape, vocab_size)
    return BagOfEmbeddings(vocab, num_classes, emb=64, hidden=64)


@register_model("bag-student", kind="text", description="smallest bag of embeddings: mean Embedding(16)-Dense(classes)")
def bag_student(*, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None) -> nn.Module:
    """Bag of embeddings, smallest: mean Embedding(vocab, 16)-Dense(classes)."""
    _, vocab = _text_shape(input_shape, vocab_size)
    return BagOfEmbeddings(vocab, num_classes, emb=16)
