"""Code shards: what ``prior/extract.py`` writes and prior training reads.

Layout of a codes folder::

    meta.json                     tokenizer, codebook sizes, code shapes, label names, per-split item counts
    <split>/shard-00000.safetensors  codes.0 .. codes.{L-1} (n, h_l, w_l) int16/int32, labels (n,), index (n,)

``labels`` is -1 for an unlabelled item; ``index`` is the item's position in the source split (skipped bad
images leave gaps). A split is complete when meta.json lists it; shards are written atomically, so an
interrupted extraction resumes at the first missing shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

META_FORMAT = "hqvae-codes"
META_VERSION = 1


def shard_path(root: str | os.PathLike, split: str, shard: int) -> Path:
    return Path(root) / split / f"shard-{shard:05d}.safetensors"


def code_dtype(codebook_sizes: list[int]) -> torch.dtype:
    return torch.int16 if max(codebook_sizes) <= torch.iinfo(torch.int16).max else torch.int32


def write_shard(
    path: Path, codes: list[torch.Tensor], labels: torch.Tensor, index: torch.Tensor, dtype
) -> None:
    """Writes one shard atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file

    tensors = {f"codes.{layer}": c.to(dtype).contiguous().cpu() for layer, c in enumerate(codes)}
    tensors["labels"] = labels.long().contiguous().cpu()
    tensors["index"] = index.long().contiguous().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def read_meta(root: str | os.PathLike) -> dict:
    path = Path(root) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: extract codes first (python prior/extract.py --tokenizer RUN --output {root})"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != META_FORMAT:
        raise ValueError(f"{path} is not an hqvae codes folder (format {meta.get('format')!r})")
    return meta


class CodeDataset(Dataset):
    """Items (codes: list of (h_l, w_l) long tensors, label: long scalar) of one split of a codes folder.

    ``in_memory=True`` loads every shard once (fast; codes are small: ImageNet's 16x16 + 32x32 int16 codes are
    3.3 GB); ``False`` reads each item from memory-mapped shards, for splits larger than RAM.
    """

    def __init__(self, root: str | os.PathLike, split: str, in_memory: bool = True):
        from safetensors import safe_open

        self.root, self.split = Path(root), split
        self.meta = read_meta(root)
        if split not in self.meta["splits"]:
            raise ValueError(
                f"split {split!r} is not in {self.root} (complete splits: {sorted(self.meta['splits'])})"
            )
        info = self.meta["splits"][split]
        self.num_layers = len(self.meta["codebook_sizes"])
        self.paths = [shard_path(root, split, s) for s in range(info["num_shards"])]
        self.sizes = []
        for path in self.paths:
            with safe_open(str(path), "pt") as f:
                self.sizes.append(f.get_slice("labels").get_shape()[0])
        self.starts = torch.tensor([0, *self.sizes]).cumsum(0)
        self.in_memory = in_memory
        self._handles: dict[int, object] = {}
        if in_memory:
            from safetensors.torch import load_file

            shards = [load_file(str(p)) for p in self.paths]
            self.codes = [
                torch.cat([s[f"codes.{layer}"] for s in shards]) for layer in range(self.num_layers)
            ]
            self.labels = torch.cat([s["labels"] for s in shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.in_memory:
            return [c[index].long() for c in self.codes], self.labels[index]
        from safetensors import safe_open

        shard = int(torch.searchsorted(self.starts, torch.tensor(index), right=True)) - 1
        row = index - int(self.starts[shard])
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.paths[shard]), "pt")
        f = self._handles[shard]
        codes = [f.get_slice(f"codes.{layer}")[row : row + 1][0].long() for layer in range(self.num_layers)]
        return codes, f.get_slice("labels")[row : row + 1][0]

    def __getstate__(self):  # safe_open handles do not pickle (DataLoader workers reopen them)
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def collate_codes(batch):
    """-> (list of (B, h_l, w_l) long tensors, labels (B,))."""
    codes, labels = zip(*batch)
    return [torch.stack(layer) for layer in zip(*codes)], torch.stack(labels)


# Model construction from the codes' metadata
def count_classes(meta: dict, dataset: CodeDataset) -> int:
    """Classes from the label names, else max label + 1; 0 when the codes have no labels (unconditional)."""
    if meta.get("label_names"):
        return len(meta["label_names"])
    labels = (
        torch.stack([dataset[i][1] for i in range(len(dataset))]) if not dataset.in_memory else dataset.labels
    )
    return int(labels.max()) + 1 if labels.numel() and int(labels.max()) >= 0 else 0


def derived_kwargs(prior: str, level: int, meta: dict, num_classes: int) -> dict:
    """The shape arguments of the prior, read off the tokenizer's codes."""
    sizes, shapes = meta["codebook_sizes"], [tuple(s) for s in meta["latent_shapes"]]
    if prior == "masked":
        if not 0 <= level < len(sizes):
            raise ValueError(
                f"level must be in [0, {len(sizes)}) for a {len(sizes)}-layer tokenizer, got {level}"
            )
        return {
            "codebook_size": sizes[level],
            "height": shapes[level][0],
            "width": shapes[level][1],
            "num_classes": num_classes,
            "condition_codebook_sizes": list(sizes[:level]),
            "condition_shapes": [list(s) for s in shapes[:level]],
        }
    if len(set(shapes)) != 1:
        raise ValueError(
            f"the (contextual) RQ-Transformer needs every code layer at one resolution (RSQ-VAE / RQ-VAE); these codes have "
            f"shapes {shapes} (use prior: masked, one per level)"
        )
    return {
        "codebook_sizes": list(sizes),
        "depth": len(sizes),
        "height": shapes[0][0],
        "width": shapes[0][1],
        "num_classes": num_classes,
    }


def unigram_entropy(dataset: CodeDataset, layers: list[int], sizes: list[int]) -> float:
    """Mean over ``layers`` of the entropy (nats) of the codes' marginal distribution: the loss of a prior
    that knows only code frequencies (a tighter baseline than log K)."""
    entropies = []
    for layer in layers:
        codes = (
            dataset.codes[layer]
            if dataset.in_memory
            else torch.stack([dataset[i][0][layer] for i in range(len(dataset))])
        )
        p = torch.bincount(codes.flatten().long(), minlength=sizes[layer]).double()
        p = p[p > 0] / p.sum()
        entropies.append(float(-(p * p.log()).sum()))
    return sum(entropies) / len(entropies)
