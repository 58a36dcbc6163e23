import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import HQVAEPipeline
from pipelines.assemble import assemble_pipeline
from pipelines.assemble import main as assemble_main
from prior import (
    ContextualRQTransformer,
    DraftAndReviseScheduler,
    MaskedPriorStack,
    MaskedTokenScheduler,
    MaskedTokenTransformer,
    RQTransformer,
)
from prior.train import main as prior_main
from tests.conftest import ROOT
from tokenizer import HQVAE

LABELS = {0: "zero", 1: "one, uno", 2: "two"}


def tiny_hqvae(layers, sizes, stem_downsamples=2):
    torch.manual_seed(0)
    return HQVAE(in_channels=1, hidden_channels=16, embedding_dim=8, num_res_blocks=1,
                 num_stem_downsamples=stem_downsamples, layers_per_resolution=layers,
                 codebook_sizes=sizes).eval()  # fmt: skip


def masked_pipeline() -> HQVAEPipeline:
    hqvae = tiny_hqvae([1, 1], [16, 12])
    torch.manual_seed(1)
    top = MaskedTokenTransformer(16, 4, 4, num_classes=3, hidden_size=16, num_layers=1, num_heads=2)
    bottom = MaskedTokenTransformer(12, 8, 8, num_classes=3, condition_codebook_sizes=[16],
                                    condition_shapes=[[4, 4]], hidden_size=16, num_layers=1, num_heads=2)  # fmt: skip
    stack = MaskedPriorStack.from_priors([top, bottom]).eval()
    return HQVAEPipeline(
        hqvae, stack, MaskedTokenScheduler(16), id2label=LABELS, metadata={"data": {"name": "toy"}}
    )


def rq_pipeline() -> HQVAEPipeline:
    hqvae = tiny_hqvae([3], [8, 8, 8], stem_downsamples=3)  # 4x4 x 3 codes
    torch.manual_seed(1)
    prior = RQTransformer(
        8, 3, 4, 4, num_classes=3, hidden_size=16, num_heads=2, spatial_layers=1, depth_layers=1
    )
    return HQVAEPipeline(hqvae, prior.eval(), None, id2label=LABELS)


def contextual_pipeline() -> HQVAEPipeline:
    hqvae = tiny_hqvae([3], [8, 8, 8], stem_downsamples=3)  # 4x4 x 3 codes
    torch.manual_seed(1)
    prior = ContextualRQTransformer(
        8, 3, 4, 4, num_classes=3, hidden_size=16, num_heads=2, spatial_layers=1, depth_layers=1
    )
    scheduler = DraftAndReviseScheduler(num_revisions=1, revise_steps=2)
    return HQVAEPipeline(hqvae, prior.eval(), scheduler, id2label=LABELS)


PIPELINES = {"masked": masked_pipeline, "rq": rq_pipeline, "contextual": contextual_pipeline}
CALL = dict(
    class_labels=["zero", "uno", 2], num_images_per_label=2, num_inference_steps=3, guidance_scale=2.0
)


@pytest.fixture(scope="module", params=sorted(PIPELINES))
def pipe(request):
    return PIPELINES[request.param]()


def test_output_types_and_codes(pipe):
    out = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="pt", return_codes=True)
    assert out.images.shape == (6, 1, 32, 32) and out.images.min() >= 0 and out.images.max() <= 1
    assert [tuple(c.shape[1:]) for c in out.codes] == pipe.hqvae.latent_shapes(32, 32)
    as_np = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert as_np.shape == (6, 32, 32, 1) and np.allclose(as_np, out.images.permute(0, 2, 3, 1).numpy())
    as_pil = pipe(**CALL, generator=torch.Generator().manual_seed(0)).images
    assert len(as_pil) == 6 and isinstance(as_pil[0], Image.Image) and as_pil[0].size == (32, 32)
    codes = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="codes")
    assert codes.images is None and all(torch.equal(a, b) for a, b in zip(codes.codes, out.codes))
    images, no_codes = pipe(
        **CALL, generator=torch.Generator().manual_seed(0), output_type="pt", return_dict=False
    )
    assert torch.equal(images, out.images) and no_codes is None


def test_same_seed_same_images_and_chunking_does_not_change_them(pipe):
    a = pipe(**CALL, generator=torch.Generator().manual_seed(3), output_type="pt", return_codes=True)
    b = pipe(**CALL, generator=torch.Generator().manual_seed(3), output_type="pt", return_codes=True)
    c = pipe(**CALL, generator=torch.Generator().manual_seed(4), output_type="pt", return_codes=True)
    assert torch.equal(a.images, b.images)
    assert not all(torch.equal(x, y) for x, y in zip(a.codes, c.codes))
    for batch_size in (1, 4):
        chunked = pipe(**CALL, generator=torch.Generator().manual_seed(3), output_type="pt", return_codes=True,
                       batch_size=batch_size)  # fmt: skip
        assert all(torch.equal(x, y) for x, y in zip(a.codes, chunked.codes))
        assert torch.allclose(a.images, chunked.images, atol=1e-5)
    # one generator per image: image i depends on generator i only
    gens = [torch.Generator().manual_seed(10 + i) for i in range(6)]
    full = pipe(**CALL, generator=gens, output_type="codes").codes
    gens = [torch.Generator().manual_seed(10 + i) for i in range(6)]
    last = pipe(class_labels=[2], num_images_per_label=2, num_inference_steps=3, guidance_scale=2.0,
                generator=gens[4:], output_type="codes").codes  # fmt: skip
    assert all(torch.equal(x[4:], y) for x, y in zip(full, last))


def test_top_levels_only(pipe):
    out = pipe(
        **CALL, generator=torch.Generator().manual_seed(0), output_type="pt", num_levels=1, return_codes=True
    )
    assert out.images.shape == (6, 1, 32, 32) and len(out.codes) == 1
    full = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="pt", return_codes=True)
    assert torch.equal(out.codes[0], full.codes[0])  # the top level does not depend on what comes after it
    expected = pipe.hqvae.decode_indices(out.codes, num_layers=1).clamp(0, 1)
    assert torch.allclose(out.images, expected, atol=1e-6)


def test_label_names_and_validation_errors(pipe):
    assert pipe.get_label_ids(["one", "uno", "two"]) == [1, 1, 2]
    assert pipe.get_label_ids("zero") == [0]
    cases = [
        (dict(class_labels=["three"]), "unknown label name"),
        (dict(class_labels=[3]), "out of range"),
        (dict(class_labels=[-1]), "out of range"),
        (dict(class_labels=[1.5]), "class labels must be integer ids or names, got 1.5"),
        (dict(class_labels=torch.tensor([1.0])), "class labels must be integer ids or names, got 1.0"),
        (dict(class_labels=None), "class_labels is required"),
        (dict(class_labels=[0], num_inference_steps=0), "num_inference_steps"),
        (dict(class_labels=[0], guidance_scale=-0.5), "guidance_scale must be >= 0"),
        (dict(class_labels=[0], output_type="jpeg"), "output_type"),
        (dict(class_labels=[0], num_levels=4), "num_levels"),
        (dict(class_labels=[0], num_levels=0), "num_levels"),
        (dict(class_labels=[0], num_images_per_label=0), "num_images_per_label"),
        (dict(class_labels=[0], batch_size=0), "batch_size"),
        (dict(class_labels=[0, 1], generator=[torch.Generator()]), "one per image"),
        (dict(class_labels=[]), "class_labels is empty"),
        (dict(class_labels=[0], generator="abc"), "generator must be a torch.Generator.*got 'abc'"),
        (dict(class_labels=[0, 1], generator=[None, torch.Generator()]), "generator must be .*got None"),
        (dict(class_labels=[0], guidance_schedule="exp", guidance_scale=2.0), "guidance_schedule"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)


def test_mismatched_tokenizer_and_prior():
    masked, rq = masked_pipeline(), rq_pipeline()
    with pytest.raises(ValueError, match="codebook sizes"):
        HQVAEPipeline(tiny_hqvae([1, 1], [16, 16]), masked.prior, masked.scheduler)
    with pytest.raises(ValueError, match="code layers"):
        HQVAEPipeline(tiny_hqvae([1, 1, 1], [16, 12, 12]), masked.prior, masked.scheduler)
    with pytest.raises(ValueError, match="layers_per_resolution"):
        HQVAEPipeline(masked.hqvae, rq.prior, None)
    with pytest.raises(ValueError, match="scheduler"):
        HQVAEPipeline(masked.hqvae, masked.prior, None)
    top = masked.prior.levels[0]
    wide = MaskedTokenTransformer(12, 16, 16, num_classes=3, condition_codebook_sizes=[16],
                                  condition_shapes=[[4, 4]], hidden_size=16, num_layers=1, num_heads=2)  # fmt: skip
    with pytest.raises(ValueError, match="code shapes"):
        HQVAEPipeline(masked.hqvae, MaskedPriorStack.from_priors([top, wide]), masked.scheduler)


@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_save_load_round_trip_in_a_fresh_process(kind, tmp_path):
    pipe = PIPELINES[kind]()
    pipe.save_pretrained(tmp_path)
    assert list(tmp_path.glob("prior/*.safetensors")) and list(tmp_path.glob("hqvae/*.safetensors"))
    card = (tmp_path / "README.md").read_text()
    assert (
        "# HQ-VAE two-stage image generator" in card
        and "## Training data" in card
        and "takida2024hqvae" in card
    )
    expected = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="pt").images
    script = f"""
import torch
from pipelines import HQVAEPipeline
pipe = HQVAEPipeline.from_pretrained({str(tmp_path)!r})
images = pipe(class_labels=["zero", "uno", 2], num_images_per_label=2, num_inference_steps=3, guidance_scale=2.0,
              generator=torch.Generator().manual_seed(0), output_type="pt").images
torch.save({{"images": images, "labels": pipe.labels}}, {str(tmp_path / "out.pt")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    assert torch.equal(result["images"], expected)
    assert result["labels"] == {"zero": 0, "one": 1, "uno": 1, "two": 2}


def test_torch_dtype_and_to(tmp_path):
    masked_pipeline().save_pretrained(tmp_path)
    pipe = HQVAEPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert pipe.prior.dtype == torch.bfloat16 and pipe.hqvae.dtype == torch.bfloat16
    out = pipe(
        class_labels=[0], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    )
    assert out.images.shape == (1, 1, 32, 32) and out.images.dtype == torch.float32
    pipe.to(torch.float32)
    assert pipe.prior.dtype == torch.float32


def test_assemble_from_runs_checks_fit(tokenizer_runs, tmp_path):
    def train(config, run, out, *overrides):
        prior_main(["--config", str(ROOT / "configs/prior" / f"{config}.yaml"),
                    f"data.codes_dir={tokenizer_runs[run] / 'codes'}", f"output_dir={out}", *overrides])  # fmt: skip
        return out

    level0 = train("tiny_masked", "tiny_sqvae2", tmp_path / "l0", "level=0")
    level1 = train("tiny_masked", "tiny_sqvae2", tmp_path / "l1", "level=1")
    rq = train("tiny_rq", "tiny_rqvae", tmp_path / "rq")
    out = tmp_path / "pipe"
    assemble_main(["--tokenizer", str(tokenizer_runs["tiny_sqvae2"]), "--priors", str(level1), str(level0),
                   "--output", str(out)])  # fmt: skip
    pipe = HQVAEPipeline.from_pretrained(out)
    assert len(pipe.prior.levels) == 2 and pipe.labels["Sneaker"] == 7
    images = pipe(class_labels=["Sneaker", 0], num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 32, 32, 1)
    card = (out / "README.md").read_text()
    assert '"rmse"' in card and '"uniform_loss"' in card
    index = json.loads((out / "model_index.json").read_text())
    assert index["prior"][1] == "MaskedPriorStack" and index["hqvae"][1] == "HQVAE"
    rq_pipe = assemble_pipeline(tokenizer_runs["tiny_rqvae"], [rq])
    assert rq_pipe(class_labels=[1], output_type="pt").images.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="one masked prior per level"):
        assemble_pipeline(tokenizer_runs["tiny_sqvae2"], [level0])
    with pytest.raises(ValueError, match="trained on codes of"):
        assemble_pipeline(tokenizer_runs["tiny_sqvae2"], [rq])
    with pytest.raises(FileNotFoundError, match="not a finished prior run"):
        assemble_pipeline(tokenizer_runs["tiny_sqvae2"], [tmp_path])


@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_sample_command_writes_a_grid(kind, tmp_path):
    from pipelines.sample import main as sample_main

    PIPELINES[kind]().save_pretrained(tmp_path / "pipe")
    result = sample_main(["--pipeline", str(tmp_path / "pipe"), "--output", str(tmp_path / "grid.png"),
                          "--per-label", "2", "--num-inference-steps", "2", "--guidance-scale", "1.5"])  # fmt: skip
    assert result["images"] == 6
    assert result["rows"] == ["0: zero", "1: one", "2: two"]  # one labelled row per class
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] > 2 * 16 * 2 and grid.size[1] > 3 * 16 * 2  # images enlarged 2x, labels and a title


def test_from_pretrained_takes_the_main_jobs_output_folder_and_names_a_missing_one(tmp_path):
    PIPELINES["masked"]().save_pretrained(tmp_path / "job" / "pipeline")
    assert isinstance(HQVAEPipeline.from_pretrained(tmp_path / "job"), HQVAEPipeline)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HQVAEPipeline.from_pretrained(str(tmp_path / "jbo"))
