"""Perceptual and adversarial losses for tokenizer training (paper appendix F.5; PatchGAN after Isola et al.).

- ``pad_and_trim``: the padding-and-trimming operator of appendix F.5, applied to reconstruction and
  reference alike before LPIPS (it removes the line artifacts that VGG's max-pooling leaves otherwise).
- ``PerceptualLoss``: LPIPS (the ``lpips`` package, VGG16) on padded-and-trimmed images in [0, 1].
- ``PatchDiscriminator`` + ``hinge_discriminator_loss`` / ``generator_adversarial_loss`` + ``adaptive_weight``
  (the ratio of gradient norms at the decoder's last layer, clamped), as in VQGAN-style training.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

VGG16_FILENAME = "vgg16-397923af.pth"  # the torchvision weights lpips builds its VGG16 from


def pad_and_trim(
    reconstruction: torch.Tensor,
    reference: torch.Tensor,
    generator: torch.Generator | None = None,
    pad: int = 15,
    max_trim: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Appendix F.5: replicate-pad both images by ``pad`` px, crop one random window from both
    (top, left in [0, max_trim); bottom, right = padded size - [0, max_trim)), resize back to H x W bicubic."""
    if reconstruction.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(reconstruction.shape)} vs {tuple(reference.shape)}")
    height, width = reference.shape[-2:]
    padded = F.pad(torch.cat([reconstruction, reference]), (pad, pad, pad, pad), mode="replicate")
    padded_h, padded_w = padded.shape[-2:]
    device = generator.device if generator is not None else None  # a CUDA generator draws on its device
    top, left, bottom_trim, right_trim = torch.randint(
        0, max_trim, (4,), generator=generator, device=device
    ).tolist()
    window = padded[:, :, top : padded_h - bottom_trim, left : padded_w - right_trim]
    resized = F.interpolate(window, size=(height, width), mode="bicubic", align_corners=False)
    return resized.split(reference.shape[0])


def vgg16_weights_path() -> Path:
    """Where torchvision (and so lpips) looks for the VGG16 weights: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


class PerceptualLoss(nn.Module):
    """LPIPS-VGG between padded-and-trimmed images in [0, 1] (mean over the batch).

    ``pretrained_backbone=True`` needs torchvision's VGG16 weights in the torch hub cache (or at
    ``vgg16_path``, copied there) and fails *before* training with the place to put them when missing;
    ``False`` builds a randomly initialised backbone (tests only: the loss is then meaningless).
    """

    def __init__(
        self,
        pretrained_backbone: bool = True,
        vgg16_path: str | os.PathLike | None = None,
        use_pad_and_trim: bool = True,
    ):
        super().__init__()
        import lpips

        from tokenizer.training_utils import check_weights_file

        if pretrained_backbone:
            target = vgg16_weights_path()
            if vgg16_path is not None:
                source = Path(vgg16_path)
                if not source.is_file():
                    raise FileNotFoundError(f"VGG16 weights not found at vgg16_path={source}")
                check_weights_file(source, "VGG16")
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(source.resolve())
            if not target.exists():
                raise FileNotFoundError(
                    f"LPIPS needs torchvision's VGG16 weights ({VGG16_FILENAME}), not found at {target}. "
                    "Download them once online (torchvision.models.vgg16(weights='IMAGENET1K_V1')), or pass "
                    "their path as vgg16_path, or disable the perceptual loss."
                )
            check_weights_file(target, "VGG16")  # torchvision then reads it with weights_only=False
        self.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=not pretrained_backbone, verbose=False)
        self.lpips.requires_grad_(False).eval()
        self.use_pad_and_trim = use_pad_and_trim

    def train(self, mode: bool = True):
        super().train(mode)
        self.lpips.eval()  # the backbone is frozen and always in eval mode
        return self

    def forward(
        self,
        reconstruction: torch.Tensor,
        reference: torch.Tensor,
        generator: torch.Generator | None = None,
        pad_and_trim: bool | None = None,
    ) -> torch.Tensor:
        """Mean LPIPS of images in [0, 1]; ``pad_and_trim`` overrides the constructor's choice (evaluation
        reports plain LPIPS)."""
        if self.use_pad_and_trim if pad_and_trim is None else pad_and_trim:
            reconstruction, reference = globals()["pad_and_trim"](reconstruction, reference, generator)
        if reference.shape[1] == 1:  # grayscale -> RGB for VGG
            reconstruction, reference = reconstruction.expand(-1, 3, -1, -1), reference.expand(-1, 3, -1, -1)
        # lpips expects [-1, 1]
        return self.lpips(reconstruction * 2 - 1, reference * 2 - 1).mean()


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al., 2017): strided 4x4 convs, one logit per overlapping patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = channels
        for index in range(1, num_layers + 1):
            previous, width = width, channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1
            layers += [
                nn.Conv2d(previous, width, 4, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images):
        return self.net(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 (E[relu(1 - D(x))] + E[relu(1 + D(x-hat))])."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[D(x-hat)] (the hinge GAN's generator loss)."""
    return -fake_logits.mean()


def adaptive_weight(
    reconstruction_loss: torch.Tensor,
    adversarial_loss: torch.Tensor,
    last_layer_weight: torch.Tensor,
    max_weight: float = 1e4,
    epsilon: float = 1e-4,
) -> torch.Tensor:
    """||grad_w L_rec|| / (||grad_w L_adv|| + eps) at the decoder's last layer w, clamped to [0, max], detached
    (Esser et al., 2021): balances the adversarial term against the reconstruction term."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer_weight, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial_loss, last_layer_weight, retain_graph=True)[0]
    weight = rec_grad.norm() / (adv_grad.norm() + epsilon)
    return weight.clamp(0.0, max_weight).detach()


class TokenizerLoss:
    """The loss of one tokenizer training step, composed with the model's own objective.

    The model returns its objective (eq. 6 / 14 / 26 for SQ, eq. 7 / 15 for VQ; ``HQVAE.forward``). LPIPS is
    passed *into* it as an extra distortion inside the decoder term (appendix F.5: in place of the squared
    error inside the same Gaussian term for SQ; added to the MSE for VQ), so the objective is assembled once.
    The PatchGAN term (hinge loss, adaptive weight at the decoder's last layer, from
    ``adversarial_start_step`` on) is added on top; ``discriminator_loss`` is the discriminator's side.
    """

    def __init__(
        self,
        perceptual: PerceptualLoss | None = None,
        perceptual_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        adversarial_weight: float = 0.0,
        adversarial_start_step: int = 0,
        adaptive_weight_max: float = 1e4,
    ):
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.discriminator, self.adversarial_weight = discriminator, adversarial_weight
        self.adversarial_start_step, self.adaptive_weight_max = adversarial_start_step, adaptive_weight_max

    def adversarial_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.adversarial_start_step

    def __call__(self, model, last_layer: torch.Tensor, images, generator, step: int, autocast):
        """(loss, named terms, model output). ``model`` may be DDP-wrapped; ``last_layer`` is the decoder's
        last weight (``HQVAE.last_layer_weight``); ``autocast`` the accelerator's context factory."""
        perceptual = {}
        distortion = None
        if self.perceptual is not None:

            def distortion(reconstruction, reference):
                with torch.autocast(device_type=reference.device.type, enabled=False):  # LPIPS in fp32
                    perceptual["perceptual"] = self.perceptual(
                        reconstruction.float(), reference.float(), generator
                    )
                return self.perceptual_weight * perceptual["perceptual"]

        with autocast():
            out = model(images, generator=generator, distortion=distortion)
        terms = {"objective": out.loss, **perceptual}
        loss = out.loss
        if self.adversarial_active(step):
            adversarial = generator_adversarial_loss(self.discriminator(out.sample))
            weight = adaptive_weight(loss, adversarial, last_layer, max_weight=self.adaptive_weight_max)
            terms["adversarial"], terms["adaptive_weight"] = adversarial, weight
            loss = loss + self.adversarial_weight * weight * adversarial
        terms["total"] = loss
        return loss, terms, out

    def discriminator_loss(
        self, images: torch.Tensor, reconstruction: torch.Tensor, autocast
    ) -> torch.Tensor:
        """The hinge loss of the discriminator on real images and (detached) reconstructions, in one forward
        over both (DDP expects one forward per backward)."""
        with autocast():
            logits = self.discriminator(torch.cat([images, reconstruction.detach().to(images.dtype)]))
            real_logits, fake_logits = logits.split(images.shape[0])
            return hinge_discriminator_loss(real_logits, fake_logits)
