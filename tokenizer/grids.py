"""Image grids that explain themselves: a title line and a label at the start of every row (class names of a
sample grid, "original" / "reconstruction" of a reconstruction grid). Small images are enlarged with nearest
neighbours so that 32x32 codes stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

PADDING = 2
LABEL_GAP = 6


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font when Pillow has FreeType
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _row_image(row: torch.Tensor, scale: int) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one RGB strip, images side by side with white padding."""
    row = row.detach().float().clamp(0, 1).cpu()
    if row.shape[1] == 1:
        row = row.expand(-1, 3, -1, -1)
    row = row[:, :3]
    n, _, h, w = row.shape
    strip = torch.ones(3, h, n * (w + PADDING) - PADDING)
    for i, image in enumerate(row):
        strip[:, :, i * (w + PADDING) : i * (w + PADDING) + w] = image
    array = (strip.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def labelled_grid(
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str],
    title: str | None = None,
    scale: int | None = None,
) -> Image.Image:
    """One row per entry of ``rows`` ((N_i, C, H, W) float in [0, 1]), its label on the left, ``title`` on top.

    ``scale``: nearest-neighbour enlargement (default: 2 for images under 64 pixels, else 1)."""
    if len(rows) != len(row_labels):
        raise ValueError(f"{len(rows)} rows but {len(row_labels)} row labels")
    if not rows:
        raise ValueError("labelled_grid needs at least one row")
    height = rows[0].shape[-2]
    scale = scale or (2 if height < 64 else 1)
    strips = [_row_image(row, scale) for row in rows]
    font = _font(max(11, min(18, height * scale // 3)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        return right - left, bottom - top

    label_width = max(text_size(str(label))[0] for label in row_labels) + 2 * LABEL_GAP
    title_height = text_size(title)[1] + 2 * LABEL_GAP if title else 0
    strip_height = max(s.height for s in strips)
    width = label_width + max(s.width for s in strips) + LABEL_GAP
    if title:
        width = max(width, text_size(title)[0] + 2 * LABEL_GAP)
    canvas = Image.new("RGB", (width, title_height + len(strips) * (strip_height + PADDING)), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((LABEL_GAP, LABEL_GAP), title, fill="black", font=font)
    for i, (strip, label) in enumerate(zip(strips, row_labels)):
        top = title_height + i * (strip_height + PADDING)
        canvas.paste(strip, (label_width, top))
        _, text_height = text_size(str(label))
        draw.text((LABEL_GAP, top + (strip_height - text_height) // 2), str(label), fill="black", font=font)
    return canvas


def save_labelled_grid(
    path: str | Path,
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str],
    title: str | None = None,
    scale: int | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, row_labels, title, scale).save(path)
    return path


def reconstruction_rows(
    images: torch.Tensor, reconstructions: torch.Tensor, per_row: int = 8
) -> tuple[list[torch.Tensor], list[str]]:
    """Originals above their reconstructions, ``per_row`` images a row: (rows, labels) for ``labelled_grid``."""
    rows, labels = [], []
    for original, reconstruction in zip(images.split(per_row), reconstructions.split(per_row)):
        rows += [original, reconstruction]
        labels += ["original", "reconstruction"]
    return rows, labels


def class_rows(images: torch.Tensor, labels: Sequence[int], names: dict[int, str] | None = None):
    """Images grouped by consecutive equal ``labels`` (the pipeline's order): (rows, row labels)."""
    rows, row_labels, start = [], [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            rows.append(images[start:i])
            label = int(labels[start])
            row_labels.append(f"{label}: {names[label]}" if names and label in names else f"class {label}")
            start = i
    return rows, row_labels
