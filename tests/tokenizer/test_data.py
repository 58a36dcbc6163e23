import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer.data import ImageDataset, collate_images, load_hf_split, to_tensor_image


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An imagefolder with one image of each awkward kind, plus a corrupt file."""
    root = tmp_path_factory.mktemp("images")
    train = root / "train" / "cat"
    train.mkdir(parents=True)
    Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8)).save(train / "rgb.png")
    Image.fromarray(np.full((40, 40), 100, dtype=np.uint8), mode="L").save(train / "gray.png")
    rgba = np.zeros((36, 36, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 18:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(train / "rgba.png")
    Image.fromarray(np.full((8, 8, 3), 50, dtype=np.uint8)).save(train / "tiny.png")
    (train / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    other = root / "train" / "dog"  # a second class, so that imagefolder infers labels
    other.mkdir()
    Image.fromarray(np.full((32, 32, 3), 10, dtype=np.uint8)).save(other / "dog.png")
    return root


def _dataset(folder, **kwargs):
    hf = load_hf_split("imagefolder", str(folder), "train")
    return ImageDataset(hf, channels=kwargs.pop("channels", 3), image_size=32, **kwargs)


def _by_name(dataset, name):
    for i in range(len(dataset)):
        if dataset.data[i]["image"]["path"].endswith(name):
            return i
    raise KeyError(name)


def test_grayscale_rgba_and_small_images_are_converted(image_folder):
    data = _dataset(image_folder)
    gray, _ = data[_by_name(data, "gray.png")]
    assert gray.shape == (3, 32, 32)
    torch.testing.assert_close(gray, torch.full_like(gray, 100 / 255))
    rgba, _ = data[_by_name(data, "rgba.png")]
    # transparent pixels are composited on white, opaque ones keep their red
    torch.testing.assert_close(rgba[:, 16, 2], torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(rgba[:, 16, 29], torch.tensor([1.0, 0.0, 0.0]))
    tiny, _ = data[_by_name(data, "tiny.png")]
    assert tiny.shape == (3, 32, 32)  # upsampled by default
    rgb_as_gray, _ = _dataset(image_folder, channels=1)[_by_name(data, "rgb.png")]
    assert rgb_as_gray.shape == (1, 32, 32)


def test_corrupt_and_too_small_images_are_skipped_and_counted(image_folder):
    data = _dataset(image_folder, min_image_size=16)
    items = [data[i] for i in range(len(data))]
    images, labels, skipped = collate_images(items)
    assert skipped == 2  # corrupt.png and tiny.png
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)


def test_corrupt_image_can_stop_the_run_naming_the_file(image_folder):
    data = _dataset(image_folder, on_bad_image="raise")
    with pytest.raises(ValueError, match="corrupt.png"):
        data[_by_name(data, "corrupt.png")]


def test_bad_columns_and_options_are_named(image_folder):
    with pytest.raises(ValueError, match="image_column 'img'"):
        _dataset(image_folder, image_column="img")
    with pytest.raises(ValueError, match="label_column 'class'"):
        _dataset(image_folder, label_column="class")
    with pytest.raises(ValueError, match="on_bad_image"):
        _dataset(image_folder, on_bad_image="ignore")


def test_center_crop_keeps_the_middle():
    array = np.zeros((32, 64), dtype=np.uint8)
    array[:, 16:48] = 255  # a bright middle band as wide as the crop
    image = to_tensor_image(Image.fromarray(array, mode="L"), channels=1, image_size=32)
    assert image.shape == (1, 32, 32) and image.mean() > 0.95


def test_all_skipped_batch_collates_to_none():
    assert collate_images([None, None]) == (None, None, 2)


def test_parquet_and_arrow_sources(image_folder, tmp_path):
    hf = load_hf_split("imagefolder", str(image_folder), "train")
    hf.save_to_disk(str(tmp_path / "arrow"))
    assert len(load_hf_split("arrow", str(tmp_path / "arrow"), "train")) == len(hf)
    with pytest.raises(FileNotFoundError, match=r"no train\*.parquet"):
        load_hf_split("parquet", str(tmp_path), "train")
