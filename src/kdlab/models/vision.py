"""Image classifiers: the classic lab's two CNNs and a quick MLP pair.

**Padding rule of ``lab-cnn-teacher``.** The lab's teacher uses valid (unpadded) 3×3 convolutions,
each followed by a 2×2 max-pool. That needs inputs of at least 46 px (four conv+pool stages must
leave at least 1×1). On smaller inputs (28×28 Fashion-MNIST, 8×8 digits) the convolutions use
``same`` padding instead, and a pool whose input is already 1 px wide is left out, so all four
stages still fit. The student (one conv + pool) always uses valid padding, as in the lab.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import Tensor, nn

from kdlab.models.registry import register_model


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"needs image inputs (C, H, W), got shape {tuple(input_shape)}")
    c, h, w = input_shape
    return c, h, w


def _valid_stack_fits(h: int, w: int, stages: int) -> bool:
    for _ in range(stages):
        h, w = (h - 2) // 2, (w - 2) // 2
    return h >= 1 and w >= 1


class LabCNN(nn.Module):
    """Conv(3×3, ReLU) + MaxPool(2) stages, optional dropout after given stages, then a dense head.

    Args:
        in_shape: ``(C, H, W)``.
        widths: output channels of each conv stage.
        dropout_after: ``{stage index: rate}``.
        hidden: width of the ReLU dense layer before the output (None: straight to the classes).
        head_dropout: dropout before the hidden dense layer (the lab's Dropout(0.5) after the last pool).
        num_classes: outputs.
        padding: "valid" or "same".
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        widths: Sequence[int],
        num_classes: int,
        *,
        dropout_after: dict[int, float] | None = None,
        hidden: int | None = None,
        padding: str = "valid",
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        pad = 1 if padding == "same" else 0
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c, width, 3, padding=pad), nn.ReLU()]
            h, w = (h + 2 * pad - 2), (w + 2 * pad - 2)
            if h >= 2 and w >= 2:  # a 1-px map has nothing left to pool (see module docstring)
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            if dropout_after and i in dropout_after:
                layers.append(nn.Dropout(dropout_after[i]))
            c = width
        if h < 1 or w < 1:
            raise ValueError(f"input {in_shape} is too small for {len(widths)} conv stages")
        self.features = nn.Sequential(*layers)
        flat = c * h * w
        head: list[nn.Module] = [nn.Flatten()]
        if hidden is not None:
            head += [nn.Linear(flat, hidden), nn.ReLU()]
            flat = hidden
        head.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model(
    "lab-cnn-teacher", kind="image", description="the lab's teacher: 4 conv + pool stages, Dense(512), dropout"
)
def lab_cnn_teacher(*, num_classes: int, input_shape: Sequence[int], **_: object) -> nn.Module:
    """The lab's teacher: 4× (Conv3×3-ReLU-MaxPool2), Dropout 0.2 after stage 2 and 0.5 after stage 4,
    Dense(512, ReLU), Dense(classes). 9,568,898 parameters at 224×224×3, 2 classes."""
    c, h, w = _image_shape(input_shape)
    padding = "valid" if _valid_stack_fits(h, w, 4) else "same"
    return LabCNN(
        (c, h, w), (32, 64, 64, 128), num_classes, dropout_after={1: 0.2, 3: 0.5}, hidden=512, padding=padding
    )


@register_model(
    "lab-cnn-student", kind="image", description="the lab's student: one Conv(32) + pool, then Dense(classes)"
)
def lab_cnn_student(*, num_classes: int, input_shape: Sequence[int], **_: object) -> nn.Module:
    """The lab's student: Conv3×3(32)-ReLU-MaxPool2-Flatten-Dense(classes), valid padding.
    789,442 parameters at 224×224×3, 2 classes."""
    return LabCNN(_image_shape(input_shape), (32,), num_classes)


class MLP(nn.Module):
    """Flatten, then ReLU dense layers with dropout, then a linear output."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())


@register_model("mlp-teacher", kind="image", description="quick teacher: Flatten-Dense(256)-Dense(256), dropout 0.2")
def mlp_teacher(*, num_classes: int, input_shape: Sequence[int], **_: object) -> nn.Module:
    """Quick teacher: Flatten-Dense(256)-Dense(256) with ReLU and dropout 0.2."""
    return MLP(prod(input_shape), (256, 256), num_classes, dropout=0.2)


@register_model("mlp-student", kind="image", description="quick student: Flatten-Dense(16)-Dense(classes)")
def mlp_student(*, num_classes: int, input_shape: Sequence[int], **_: object) -> nn.Module:
    """Quick student: Flatten-Dense(16, ReLU)-Dense(classes)."""
    return MLP(prod(input_shape), (16,), num_classes)
