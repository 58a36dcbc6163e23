"""Convolutional blocks of the bottom-up path, top-down layers and decoder (paper Figure 7, after VDVAE).

All blocks are plain modules with explicit arguments; ``tokenizer.model.HQVAE`` wires them together.
"""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    """VDVAE-style bottleneck residual block (Child, 2021): x + 1x1 -> 3x3 -> 3x3 -> 1x1, GELU before each.

    The bottleneck width is ``mid_ratio * channels`` (c_mid = 0.5 in the paper, appendix F).
    """

    def __init__(self, channels: int, mid_ratio: float = 0.5):
        super().__init__()
        mid = max(1, int(channels * mid_ratio))
        self.net = nn.Sequential(
            nn.GELU(),
            nn.Conv2d(channels, mid, 1),
            nn.GELU(),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mid, channels, 1),
        )

    def forward(self, x):
        return x + self.net(x)


def res_stack(channels: int, num_blocks: int, mid_ratio: float) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, mid_ratio) for _ in range(num_blocks)])


class Stem(nn.Module):
    """Pre-processing: ``num_downsamples`` strided Conv 4x4 (Table 6), the first straight from the image
    channels, so no hidden-width convolution runs at full resolution; Conv 3x3 when there is no downsampling."""

    def __init__(self, in_channels: int, hidden_channels: int, num_downsamples: int):
        super().__init__()
        if num_downsamples == 0:
            layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden_channels, 3, padding=1)]
        else:
            layers = [nn.Conv2d(in_channels, hidden_channels, 4, stride=2, padding=1)]
            for _ in range(num_downsamples - 1):
                layers += [nn.GELU(), nn.Conv2d(hidden_channels, hidden_channels, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class BottomUp(nn.Module):
    """Bottom-up path: at each resolution (finest first) a stack of ResBlocks, a 1x1 projection to d_b giving
    H^r(x), then 2x average pooling to the next coarser resolution (appendix F.1)."""

    def __init__(
        self,
        hidden_channels: int,
        embedding_dim: int,
        num_resolutions: int,
        num_res_blocks: int,
        mid_ratio: float,
    ):
        super().__init__()
        self.stages = nn.ModuleList(
            [res_stack(hidden_channels, num_res_blocks, mid_ratio) for _ in range(num_resolutions)]
        )
        self.heads = nn.ModuleList(
            [nn.Conv2d(hidden_channels, embedding_dim, 1) for _ in range(num_resolutions)]
        )
        self.pool = nn.AvgPool2d(2)

    def forward(self, h):
        """Returns [H^1, ..., H^R], coarsest first, each (B, d_b, h_r, w_r)."""
        features = []
        for index, (stage, head) in enumerate(zip(self.stages, self.heads)):
            if index > 0:
                h = self.pool(h)
            h = stage(h)
            features.append(head(h))
        return features[::-1]


class Upsample(nn.Module):
    """Top-down upsampling of the passed state (d_b channels) by 2: ConvT 4x4 -> ResBlock -> 1x1 to d_b."""

    def __init__(self, embedding_dim: int, hidden_channels: int, mid_ratio: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(embedding_dim, hidden_channels, 4, stride=2, padding=1),
            ResBlock(hidden_channels, mid_ratio),
            nn.GELU(),
            nn.Conv2d(hidden_channels, embedding_dim, 1),
        )

    def forward(self, x):
        return self.net(x)


class InjectionBlock(nn.Module):
    """Encoding block of an injected top-down layer (Figure 1c): concat(H^r(x), upsampled state) -> Z-hat_l."""

    def __init__(self, embedding_dim: int, hidden_channels: int, mid_ratio: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * embedding_dim, hidden_channels, 3, padding=1),
            ResBlock(hidden_channels, mid_ratio),
            nn.GELU(),
            nn.Conv2d(hidden_channels, embedding_dim, 1),
        )

    def forward(self, features, upsampled_state):
        return self.net(torch.cat([features, upsampled_state], dim=1))


class Decoder(nn.Module):
    """f_theta: the final top-down state (B, d_b, h, w) -> image, mirroring the stem with ConvT 4x4 upsampling
    (Table 6)."""

    def __init__(
        self,
        embedding_dim: int,
        hidden_channels: int,
        out_channels: int,
        num_upsamples: int,
        num_res_blocks: int,
        mid_ratio: float,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(embedding_dim, hidden_channels, 3, padding=1),
            res_stack(hidden_channels, num_res_blocks, mid_ratio),
        ]
        for _ in range(num_upsamples - 1):
            layers += [
                nn.GELU(),
                nn.ConvTranspose2d(hidden_channels, hidden_channels, 4, stride=2, padding=1),
            ]
        # The last layer goes straight to the image channels (mirror of the stem).
        if num_upsamples > 0:
            layers += [nn.GELU(), nn.ConvTranspose2d(hidden_channels, out_channels, 4, stride=2, padding=1)]
        else:
            layers += [nn.GELU(), nn.Conv2d(hidden_channels, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, state):
        return self.net(state)
