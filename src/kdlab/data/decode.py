"""Decoding one image file, bounded: what the image-folder loader, transfer sets and ``kdlab predict``
share (no dataset code here, so every layer above can use it)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kdlab.data.files import open_regular


class ImageTooLarge(ValueError):
    """An image with more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)."""


def decode_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image file -> uint8 ``(H, W)`` (mode ``L``) or ``(H, W, 3)`` (``RGB``) resized to ``size`` = (W, H).

    Bounded: the file must be a regular file (a FIFO or device raises
    :class:`~kdlab.data.files.NotRegularFile` without blocking), and an image of more than
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89,478,485 by default, about 9,459×9,459) raises
    :class:`ImageTooLarge` from its header, before any pixel is decoded, so one decode holds at
    most that many pixels (JPEGs are decoded at a reduced scale when much larger than ``size``).
    Pillow's warnings about a file's contents (odd EXIF, palette transparency) are not printed.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning is checked below; the rest is noise
        with open_regular(path) as f:
            try:
                img = Image.open(f)
            except Image.DecompressionBombError:
                raise ImageTooLarge(f"more than twice the {limit:,}-pixel limit") from None
            with img:
                w, h = img.size
                if limit and w * h > limit:
                    raise ImageTooLarge(f"{w}×{h} = {w * h:,} pixels, over the {limit:,}-pixel limit")
                img.draft(mode, size)  # JPEG: decode at reduced scale when much larger (fast)
                img.load()
                # convert / resize only when needed: Pillow's own no-op for the same mode / size is a copy
                out = img if img.mode == mode else img.convert(mode)
                out = out if out.size == size else out.resize(size, Image.Resampling.BILINEAR)
                return np.asarray(out, dtype=np.uint8)
