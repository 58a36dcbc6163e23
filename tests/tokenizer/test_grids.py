"""Labelled image grids (report figures, training and sampling grids)."""

import pytest
import torch

from tokenizer.grids import class_rows, labelled_grid, reconstruction_rows


def test_rows_are_labelled_and_small_images_enlarged():
    rows = [torch.rand(4, 1, 16, 16), torch.rand(3, 3, 16, 16)]
    grid = labelled_grid(rows, ["0: T-shirt/top", "1: Trouser"], title="samples")
    bare_width, bare_height = 4 * 16 * 2, 2 * 16 * 2
    assert grid.mode == "RGB" and grid.width > bare_width and grid.height > bare_height
    with pytest.raises(ValueError, match="2 rows but 1 row labels"):
        labelled_grid(rows, ["one"])


def test_reconstruction_rows_put_each_original_above_its_reconstruction():
    images, recon = torch.zeros(10, 1, 8, 8), torch.ones(10, 1, 8, 8)
    rows, labels = reconstruction_rows(images, recon, per_row=8)
    assert labels == ["original", "reconstruction"] * 2
    assert [len(r) for r in rows] == [8, 8, 2, 2] and rows[1].min() == 1 and rows[0].max() == 0


def test_class_rows_group_the_pipelines_order_and_name_classes():
    images = torch.rand(6, 1, 8, 8)
    rows, labels = class_rows(images, [3, 3, 7, 7, 9, 9], {3: "Dress", 7: "Sneaker"})
    assert labels == ["3: Dress", "7: Sneaker", "class 9"] and [len(r) for r in rows] == [2, 2, 2]
