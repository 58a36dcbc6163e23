import pytest
import torch
import torch.nn.functional as F

from tokenizer.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    pad_and_trim,
    vgg16_weights_path,
)


def test_pad_and_trim_crops_the_same_window_from_both_images():
    x = torch.rand(2, 3, 32, 40)
    a, b = pad_and_trim(x, x.clone(), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and b.shape == x.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pad_and_trim_matches_the_paper_operator_for_a_given_window():
    x, y = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    gen = torch.Generator().manual_seed(3)
    top, left, bottom_trim, right_trim = torch.randint(
        0, 16, (4,), generator=torch.Generator().manual_seed(3)
    ).tolist()
    got_x, got_y = pad_and_trim(x, y, gen)
    for got, image in ((got_x, x), (got_y, y)):
        padded = F.pad(image, (15, 15, 15, 15), mode="replicate")
        window = padded[:, :, top : 46 - bottom_trim, left : 46 - right_trim]
        want = F.interpolate(window, size=(16, 16), mode="bicubic", align_corners=False)
        torch.testing.assert_close(got, want)


def test_pad_and_trim_is_seeded_and_varies_between_draws():
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    first = pad_and_trim(x, y, torch.Generator().manual_seed(1))[0]
    again = pad_and_trim(x, y, torch.Generator().manual_seed(1))[0]
    other = pad_and_trim(x, y, torch.Generator().manual_seed(2))[0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_pad_and_trim_passes_gradient_to_every_pixel_and_rejects_mismatched_shapes():
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    out, _ = pad_and_trim(x, torch.zeros(1, 1, 8, 8), torch.Generator().manual_seed(0))
    out.sum().backward()
    assert (x.grad.abs() > 0).all()
    with pytest.raises(ValueError, match="shapes differ"):
        pad_and_trim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_perceptual_loss_with_random_backbone_and_missing_weights(tmp_path, monkeypatch):
    loss = PerceptualLoss(pretrained_backbone=False)
    x = torch.rand(2, 1, 32, 32)
    assert loss(x, x, torch.Generator().manual_seed(0)).abs() < 1e-6
    assert loss(x, torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0)) > 0
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert vgg16_weights_path().parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError, match="VGG16 weights"):
        PerceptualLoss(pretrained_backbone=True)
    with pytest.raises(FileNotFoundError, match="vgg16_path="):
        PerceptualLoss(pretrained_backbone=True, vgg16_path=tmp_path / "missing.pth")


def test_patch_discriminator_and_hinge_losses():
    disc = PatchDiscriminator(in_channels=3, channels=8, num_layers=2)
    logits = disc(torch.rand(2, 3, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1  # one logit per patch
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, 0.5]; relu(1 + fake) = [0, 1.5]
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.75)))
    torch.testing.assert_close(generator_adversarial_loss(fake), torch.tensor(0.75))


def test_adaptive_weight_is_the_ratio_of_last_layer_gradient_norms():
    w = torch.tensor([[1.0, 2.0]], requires_grad=True)
    x = torch.tensor([3.0, 4.0])
    out = (w * x).sum()
    rec, adv = 2 * out, 0.5 * out  # gradients 2x and 0.5x of x: norms 10 and 2.5
    torch.testing.assert_close(adaptive_weight(rec, adv, w), torch.tensor(10.0 / (2.5 + 1e-4)))
    assert adaptive_weight(rec, adv, w, max_weight=1.0) == 1.0
    assert not adaptive_weight(rec, adv, w).requires_grad


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_supplied_weights_files_are_checked_without_running_pickled_code(tmp_path, monkeypatch, capsys):
    """A VGG16 file given to LPIPS (and any weights file checked by check_weights_file) is read with
    weights_only=True: garbage and pickled code give a ValueError naming the file; nothing runs."""
    import pickle

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=f"{garbage} is not a VGG16 weights file"):
        PerceptualLoss(pretrained_backbone=True, vgg16_path=garbage)
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(pickle.dumps({"weight": _Payload()}))
    from tokenizer.training_utils import check_weights_file

    with pytest.raises(ValueError, match=f"{crafted} is not a VGG16 weights file"):
        check_weights_file(crafted, "VGG16")
    assert "pickled code ran" not in capsys.readouterr().out
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(check_weights_file(good, "VGG16")["w"], torch.ones(2))
