"""Audio data (tokenizer/audio.py): the log-mel transform of appendix F.2.3, the audio folder, bad clips, the
normalisation recorded with the run, and a tiny training run on spectrograms."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.conftest import tone
from tokenizer.audio import AudioConfig, AudioFolder, LogMel, build_audio_datasets, denormalise, griffin_lim
from tokenizer.config import load_config
from tokenizer.data import DataConfig

ROOT = Path(__file__).parents[2]


def test_log_mel_of_four_seconds_is_80_by_344_as_in_the_paper():
    config = AudioConfig()
    assert config.shape == (80, 344)
    mel = LogMel(config)(tone(440.0, seconds=4.0))
    assert mel.shape == (80, 344) and mel.dtype == np.float32
    assert mel.min() >= np.log(1e-5) - 1e-4  # clipped at 1e-5 before the log
    assert mel[:, 10].argmax() < 20  # a 440 Hz tone lands in a low mel band


def test_audio_folder_reads_resamples_and_counts_bad_clips(audio_folder):
    config = AudioConfig(seconds=0.25, num_frames=24, n_mels=32)
    train = AudioFolder(audio_folder, "train", config)
    assert train.label_names == ["high", "low"]
    assert len(train) == 13 and train.skipped == 2  # 12 tones + the 16 kHz clip; silent and garbage skipped
    assert any("silent.wav" in f for f in train.bad_files) and any(
        "garbage.wav" in f for f in train.bad_files
    )
    with pytest.raises(ValueError, match="garbage.wav|silent.wav"):
        AudioFolder(audio_folder, "train", config, on_bad_image="raise")
    with pytest.raises(FileNotFoundError, match="no audio split folder"):
        AudioFolder(audio_folder, "dev", config)
    cached = AudioFolder(audio_folder, "train", config)  # read back from the split's cache file
    assert list((audio_folder / "train").glob(".logmel-*.safetensors"))
    assert torch.equal(cached.log_mel, train.log_mel) and cached.skipped == 2
    other = AudioFolder(audio_folder, "train", AudioConfig(seconds=0.25, num_frames=24, n_mels=16))
    assert other.log_mel.shape[2] == 16  # other settings: another cache entry


def test_normalisation_comes_from_the_training_split_and_is_recorded(audio_folder):
    data = DataConfig(source="audiofolder", path=str(audio_folder), validation_split="validation")
    data.audio = AudioConfig(seconds=0.25, num_frames=24, n_mels=32)
    train, validation, test = build_audio_datasets(data)
    assert data.audio.mean is not None and data.audio.std > 0
    stacked = torch.stack([train[i][0] for i in range(len(train))])
    assert stacked.shape[1:] == (1, 32, 24)
    assert abs(float(stacked.mean())) < 1e-4 and abs(float(stacked.std()) - 1) < 1e-3
    torch.testing.assert_close(denormalise(train[0][0], data.audio), train.log_mel[0])
    given = DataConfig(source="audiofolder", path=str(audio_folder), validation_split="validation")
    given.audio = AudioConfig(seconds=0.25, num_frames=24, n_mels=32, mean=0.0, std=2.0)
    train2, _, _ = build_audio_datasets(given)
    torch.testing.assert_close(train2[0][0], train2.log_mel[0] / 2)  # recorded statistics are reused


def test_audio_columns_of_datasets_are_read_without_torchcodec(audio_folder, tmp_path):
    from datasets import Audio, ClassLabel, Dataset

    files = sorted((audio_folder / "train").glob("*/[0-9].wav"))
    labels = [0 if f.parent.name == "high" else 1 for f in files]
    records = Dataset.from_dict({"clip": [str(f) for f in files], "kind": labels})
    records = records.cast_column("clip", Audio()).cast_column("kind", ClassLabel(names=["high", "low"]))
    records.save_to_disk(str(tmp_path / "arrow"))  # embeds the bytes
    data = DataConfig(source="arrow", path=str(tmp_path / "arrow"), audio_column="clip", label_column="kind",
                      validation_size=4, test_split=None)  # fmt: skip
    data.audio = AudioConfig(seconds=0.25, num_frames=24, n_mels=32)
    train, validation, test = build_audio_datasets(data)
    assert (len(train), len(validation), test) == (8, 4, None) and train.label_names == ["high", "low"]
    assert train[0][0].shape == (1, 32, 24) and data.audio.std > 0
    with pytest.raises(ValueError, match="audio_column needs a hub, parquet or arrow source"):
        DataConfig(source="imagefolder", path="x", audio_column="clip")


def test_a_tiny_rsqvae_trains_on_spectrograms_and_its_run_keeps_the_scale(audio_folder, tmp_path):
    from tokenizer.train import TokenizerTrainer, TrainConfig

    config = load_config(TrainConfig, ROOT / "configs" / "tokenizer" / "tiny_audio_rsqvae.yaml",
                         [f"data.path={audio_folder}", f"output_dir={tmp_path}"])  # fmt: skip
    TokenizerTrainer(config).fit()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["rmse"] > 0 and len(metrics["perplexity"]) == 2
    from tokenizer.data import load_data_config

    recorded = load_data_config(tmp_path / "config.yaml").audio
    assert recorded.mean is not None and recorded.std is not None  # the run's config carries the scale
    assert (tmp_path / "reconstructions.png").exists()
    assert (tmp_path / "reconstructions_by_layers.png").exists()  # top 1 layer, top 2 layers
    clips = sorted(p.name for p in (tmp_path / "listening").glob("*.wav"))
    assert clips[:2] == ["clip0_original.wav", "clip0_reconstruction.wav"] and len(clips) % 2 == 0
    waveform, rate = soundfile.read(tmp_path / "listening" / "clip0_reconstruction.wav")
    assert (
        rate == recorded.sample_rate and len(waveform) == recorded.num_samples and np.abs(waveform).max() > 0
    )
    from prior.extract import extract

    # the priors take image codes only (square grids, outputs clamped to [0, 1]): refused, saying why
    with pytest.raises(NotImplementedError, match="spectrogram codes are not supported"):
        extract(tmp_path, tmp_path / "codes")


def _spectral_convergence(reference: np.ndarray, estimate: np.ndarray) -> float:
    a, b = np.exp(reference), np.exp(estimate)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def test_griffin_lim_inverts_the_log_mel_for_listening():
    config = AudioConfig(seconds=0.5)
    rng = np.random.default_rng(0)
    clip = tone(440.0, seconds=0.5) * np.linspace(0, 1, int(0.5 * 22050), dtype=np.float32)
    clip = clip + 0.05 * tone(1800.0, seconds=0.5) + 0.01 * rng.standard_normal(clip.shape).astype(np.float32)
    mel = LogMel(config)(clip)
    errors = {}
    for iterations in (1, 32):
        waveform = griffin_lim(mel, config, iterations, generator=torch.Generator().manual_seed(0))
        assert waveform.shape == (config.num_samples,) and waveform.dtype == np.float32
        errors[iterations] = _spectral_convergence(mel, LogMel(config)(waveform))
    assert errors[32] < 0.2 and errors[32] < 0.7 * errors[1]  # the phase iterations converge
    again = griffin_lim(mel, config, 32, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(
        again, griffin_lim(mel, config, 32, generator=torch.Generator().manual_seed(0))
    )
    shifted = _spectral_convergence(mel, LogMel(config)(np.roll(again, config.hop_length // 2)))
    assert errors[32] < shifted  # frames line up with the transform's (uncentred, reflect-padded) frames
    with pytest.raises(ValueError, match=r"expects a \(80, frames\) log-mel, got shape \(40, 10\)"):
        griffin_lim(mel[:40, :10], config)
    with pytest.raises(ValueError, match="iterations must be >= 1, got 0"):
        griffin_lim(mel, config, 0)


def test_spectrogram_sizes_are_checked_at_config_time():
    from tokenizer.train import TrainConfig

    with pytest.raises(ValueError, match=r"data.audio.frames=22 must be a multiple of 4 .*num_frames"):
        load_config(TrainConfig, ROOT / "configs" / "tokenizer" / "tiny_audio_rsqvae.yaml",
                    ["data.audio.num_frames=22"])  # fmt: skip


def test_urbansound8k_is_arranged_by_the_papers_folds(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import prepare_urbansound8k

    source = tmp_path / "UrbanSound8K"
    (source / "metadata").mkdir(parents=True)
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for fold, name in ((1, "dog_bark"), (9, "siren"), (10, "drilling")):
        (source / "audio" / f"fold{fold}").mkdir(parents=True)
        soundfile.write(source / "audio" / f"fold{fold}" / f"{fold}-0.wav", tone(440.0), 22050)
        rows.append(f"{fold}-0.wav,1,0,1,1,{fold},0,{name}")
    (source / "metadata" / "UrbanSound8K.csv").write_text("\n".join(rows) + "\n")
    counts = prepare_urbansound8k.prepare(source, tmp_path / "out")
    assert counts == {"train": 1, "validation": 1, "test": 1}
    assert (tmp_path / "out" / "validation" / "siren" / "9-0.wav").resolve().exists()
    with pytest.raises(FileNotFoundError, match="UrbanSound8K folder"):
        prepare_urbansound8k.prepare(tmp_path, tmp_path / "out2")


def test_speech_words_needs_espeak_ng_and_says_so(tmp_path, monkeypatch):
    import shutil
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import make_speech_words

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y espeak-ng"):
        make_speech_words.build(tmp_path)
    assert len(make_speech_words.WORDS) == 30 and len(set(make_speech_words.WORDS)) == 30


class _Identity(torch.nn.Module):
    """A stand-in tokenizer whose reconstruction is its input (one layer, two codes)."""

    num_layers, codebook_sizes = 1, [2]

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        from types import SimpleNamespace

        indices = [torch.zeros(x.shape[0], 2, 2, dtype=torch.long)]
        return SimpleNamespace(sample=x, loss=torch.zeros(()), kl_losses=torch.zeros(1), indices=indices)


def test_spectrograms_are_scored_unclamped_images_on_their_range():
    from tokenizer.metrics import evaluate_reconstruction

    spectrograms = torch.randn(4, 1, 8, 8) * 2  # normalised log-mel: outside [0, 1] on both sides
    loader = [(spectrograms, torch.zeros(4, dtype=torch.long))]
    exact = evaluate_reconstruction(_Identity(), loader, value_range=None)
    assert exact.rmse == 0.0 and exact.psnr == float("inf") and exact.ssim == pytest.approx(1.0, abs=1e-4)
    clamped = evaluate_reconstruction(_Identity(), loader)  # the image default clamps into [0, 1]
    assert clamped.rmse == pytest.approx(
        (spectrograms - spectrograms.clamp(0, 1)).pow(2).mean().sqrt().item(), rel=1e-5
    )
    assert DataConfig(source="audiofolder", path="x").value_range is None
    assert DataConfig().value_range == (0.0, 1.0)


def test_spectrogram_grids_put_the_low_mel_bands_at_the_bottom():
    from tokenizer.train import _display

    bands = (torch.arange(4.0) - 1).reshape(1, 1, 4, 1)  # mel band 0 lowest (-1) ... band 3 highest (2)
    (shown,) = _display(bands, spectrogram=True)
    assert shown.flatten().tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])  # band 0 drawn in the last row
    (image,) = _display(bands.clamp(0, 1))
    assert image.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]  # images: unchanged
