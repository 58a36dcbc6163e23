"""Audio data for the tokenizers: clips -> normalised log-mel spectrograms (1, n_mels, frames), the paper's
second domain (Table 2, appendix F.2.3).

The transform follows appendix F.2.3 (Liu et al. 2021's preprocessing, as in HiFi-GAN): mono, resampled to
``sample_rate`` (22,050 Hz), padded or cut to ``seconds`` (4 s), an STFT with a 1,024-sample Hann window and
hop 256 (reflect-padded by (n_fft - hop) / 2 on both sides, not centred: 4 s gives exactly 344 frames), the
magnitude through an 80-band Slaney mel filterbank, clipped at 1e-5 and log-compressed; then normalised by the
training split's mean and standard deviation. The DSP is ``transformers.audio_utils`` (window, STFT and the
mel filterbank) and ``scipy.signal.resample_poly``; files are read with ``soundfile`` (WAV of any bit depth,
FLAC, OGG).

The normalisation statistics are computed once, from the training split, and written into the data config
(``data.audio.mean`` / ``data.audio.std``), so a run's ``config.yaml`` carries them and every later reader
(evaluation, code extraction, decoding back to log-mel) uses the same scale (``LogMel.denormalise``).

``AudioFolder``: ``path/<split>/<class>/*.wav`` (class = sub-folder name); ``AudioRecords``: a ``datasets``
split with an audio column (``data.audio_column`` with a hub id, parquet or arrow source). An unreadable file
or a silent clip is a bad item: skipped and counted (``on_bad_image: skip``) or an error naming it (``raise``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


@dataclass
class AudioConfig:
    """The ``data.audio:`` block (used with ``data.source: audiofolder``)."""

    sample_rate: int = 22050
    seconds: float = 4.0
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5  # "dynamic range compression": log(max(mel, 1e-5)) (appendix F.2.3)
    num_frames: int | None = (
        None  # pad / cut the spectrogram to this many frames (None: what ``seconds`` gives)
    )
    mean: float | None = None  # normalisation (None: computed from the training split, then recorded here)
    std: float | None = None

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.audio.{name} must be >= 1, got {getattr(self, name)}")
        if not self.seconds > 0:
            raise ValueError(f"data.audio.seconds must be > 0, got {self.seconds}")
        if self.hop_length > self.n_fft:
            raise ValueError(f"data.audio.hop_length ({self.hop_length}) must be <= n_fft ({self.n_fft})")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"data.audio: need 0 <= f_min < f_max <= sample_rate / 2, got {self.f_min}, {self.f_max}, "
                f"{self.sample_rate}"
            )

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Spectrogram frames per clip: ``num_frames`` or 1 + (samples - hop) // hop (344 for 4 s)."""
        if self.num_frames is not None:
            return self.num_frames
        padded = self.num_samples + (self.n_fft - self.hop_length)
        return 1 + (padded - self.n_fft) // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_mels, self.frames


class LogMel:
    """Waveform (float, mono, at ``config.sample_rate``) -> log-mel (n_mels, frames), unnormalised."""

    def __init__(self, config: AudioConfig):
        from transformers.audio_utils import mel_filter_bank, window_function

        self.config = config
        self.window = window_function(config.n_fft, "hann")
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + config.n_fft // 2,
            num_mel_filters=config.n_mels,
            min_frequency=config.f_min,
            max_frequency=config.f_max,
            sampling_rate=config.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        from transformers.audio_utils import spectrogram

        c = self.config
        waveform = np.asarray(waveform, dtype=np.float64)
        waveform = np.pad(waveform[: c.num_samples], (0, max(0, c.num_samples - len(waveform))))
        side = (c.n_fft - c.hop_length) // 2
        waveform = np.pad(waveform, (side, side), mode="reflect")
        mel = spectrogram(
            waveform,
            self.window,
            frame_length=c.n_fft,
            hop_length=c.hop_length,
            power=1.0,  # magnitude, as HiFi-GAN's mel_spectrogram
            center=False,
            mel_filters=self.mel_filters,
            mel_floor=c.log_floor,
            log_mel=None,
        )
        log_mel = np.log(np.maximum(mel, c.log_floor)).astype(np.float32)
        frames = c.frames
        if log_mel.shape[1] >= frames:
            return log_mel[:, :frames]
        floor = np.full((c.n_mels, frames - log_mel.shape[1]), math.log(c.log_floor), dtype=np.float32)
        return np.concatenate([log_mel, floor], axis=1)


def griffin_lim(
    log_mel: np.ndarray | torch.Tensor,
    config: AudioConfig,
    iterations: int = 32,
    momentum: float = 0.99,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """A waveform for listening from a log-mel (n_mels, frames) in the transform's scale (``denormalise`` first).

    The mel magnitudes go back to linear frequency by the filterbank's pseudo-inverse clipped at zero (bins above
    ``f_max`` stay silent), then the phase is recovered by Griffin & Lim (1984) with the "fast" momentum of
    Perraudin et al. (2013), on ``torch.stft`` / ``torch.istft`` with the transform's window and hop. This is a
    listening aid, not the paper's HiFi-GAN vocoder: the original is passed through the same inversion, so that
    an original and its reconstruction differ only by the tokenizer (appendix F.2.3 uses the vocoded original as
    the reference too). Returns float32 samples at ``config.sample_rate``, ``config.num_samples`` long.
    """
    if iterations < 1:
        raise ValueError(f"griffin_lim: iterations must be >= 1, got {iterations}")
    c = config
    log_mel = torch.as_tensor(log_mel, dtype=torch.float64).cpu()
    if log_mel.ndim != 2 or log_mel.shape[0] != c.n_mels:
        raise ValueError(
            f"griffin_lim expects a ({c.n_mels}, frames) log-mel, got shape {tuple(log_mel.shape)}"
        )
    filters = torch.as_tensor(LogMel(c).mel_filters, dtype=torch.float64)  # (frequency bins, mels)
    magnitude = (torch.linalg.pinv(filters.T) @ log_mel.exp()).clamp_min(0)  # (frequency bins, frames)
    window = torch.hann_window(c.n_fft, dtype=torch.float64)
    length = (magnitude.shape[1] - 1) * c.hop_length  # centred frames: frame t centred at sample t * hop
    stft = dict(n_fft=c.n_fft, hop_length=c.hop_length, window=window)
    phase = torch.rand(magnitude.shape, generator=generator, dtype=torch.float64)
    angles = torch.polar(torch.ones_like(phase), 2 * math.pi * phase)
    previous = torch.zeros_like(angles)
    for _ in range(iterations):
        waveform = torch.istft(magnitude * angles, length=length, **stft)
        rebuilt = torch.stft(waveform, return_complex=True, **stft)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / angles.abs().clamp_min(1e-16)
        previous = rebuilt
    waveform = torch.istft(magnitude * angles, length=length, **stft)
    # The transform's frame t is centred at t * hop + hop / 2 (reflect padding of (n_fft - hop) / 2, uncentred)
    waveform = torch.cat([waveform.new_zeros(c.hop_length // 2), waveform])
    waveform = torch.nn.functional.pad(waveform, (0, max(0, c.num_samples - len(waveform))))
    return waveform[: c.num_samples].float().numpy()


def write_listening_samples(
    model,
    spectrograms: torch.Tensor,
    config: AudioConfig,
    folder: str | Path,
    iterations: int = 32,
    seed: int = 0,
) -> list[Path]:
    """``clip<i>_original.wav`` and ``clip<i>_reconstruction.wav`` (argmax codes) for each normalised spectrogram
    of ``spectrograms`` (B, 1, n_mels, frames), both through ``griffin_lim`` (16-bit PCM, clipped to [-1, 1])."""
    import soundfile

    if config.mean is None or config.std is None:
        raise ValueError("write_listening_samples needs data.audio.mean / std (the run's normalisation)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        reconstructions = model(spectrograms).sample.float()
    model.train(was_training)
    paths = []
    for i, pair in enumerate(zip(spectrograms.float(), reconstructions)):
        for name, spectrogram in zip(("original", "reconstruction"), pair):
            generator = torch.Generator().manual_seed(seed + i)  # the same initial phase for both of a pair
            waveform = griffin_lim(
                denormalise(spectrogram[0].cpu(), config), config, iterations, generator=generator
            )
            path = folder / f"clip{i}_{name}.wav"
            soundfile.write(path, np.clip(waveform, -1, 1), config.sample_rate, subtype="PCM_16")
            paths.append(path)
    return paths


def read_audio(path, sample_rate: int) -> np.ndarray:
    """A mono float waveform at ``sample_rate`` (channels averaged, resampled with a polyphase filter)."""
    import soundfile
    from scipy.signal import resample_poly

    source = path if hasattr(path, "read") else str(path)  # a file-like object (bytes of a dataset) or a path
    data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    waveform = data.mean(axis=1)
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate).limit_denominator(1000)
        waveform = resample_poly(waveform, ratio.numerator, ratio.denominator).astype(np.float32)
    return waveform


class LogMelSpectrograms(Dataset):
    """(log-mel (1, n_mels, frames) normalised, label) items of a list of clips, computed once (a progress bar)
    and kept in memory (``n_mels x frames x 4`` bytes per clip). A clip that cannot be read, or is empty,
    silent or non-finite, is a bad item: skipped and counted in ``skipped`` / ``bad_files``
    (``on_bad_image="skip"``) or a ``ValueError`` naming it (``"raise"``).

    ``clips``: (name, source, label) with ``source`` whatever ``soundfile.read`` takes (a path or a file-like
    object). ``cache``: a safetensors file for the spectrograms (read back when it exists)."""

    def __init__(
        self, clips, config: AudioConfig, where: str, on_bad_image: str = "skip", cache: Path | None = None
    ):
        from tokenizer.console import progress_bar

        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}")
        self.config, self.normalised = config, None
        if cache is not None and cache.exists():  # the same clips and transform settings: read them back
            from safetensors.torch import load_file

            stored = load_file(cache)
            self.log_mel, self.labels = stored["log_mel"], stored["labels"]
            self.bad_files = json.loads(cache.with_suffix(".json").read_text())["bad_files"]
            self.skipped = len(self.bad_files)
            if self.bad_files and on_bad_image == "raise":
                raise ValueError(f"bad audio file {self.bad_files[0]} (one of {self.skipped} in {where})")
            return
        transform = LogMel(config)
        spectrograms, labels, self.skipped, self.bad_files = [], [], 0, []
        for name, source, label in progress_bar(clips, desc=f"log-mel {where}", leave=False):
            try:
                waveform = read_audio(source, config.sample_rate)
                if waveform.size == 0 or not np.any(waveform) or not np.all(np.isfinite(waveform)):
                    raise ValueError("silent, empty or non-finite audio")
            except Exception as error:  # noqa: BLE001 - any unreadable clip is a bad item
                if on_bad_image == "raise":
                    raise ValueError(f"bad audio file {name}: {error}") from error
                self.skipped += 1
                self.bad_files.append(str(name))
                continue
            spectrograms.append(transform(waveform))
            labels.append(label)
        if self.skipped:
            logger.warning(
                "%s: skipped %d bad audio clip(s), e.g. %s", where, self.skipped, self.bad_files[0]
            )
        if not spectrograms:
            raise ValueError(f"{where}: every one of its {len(clips)} audio clips is bad")
        self.log_mel = torch.from_numpy(np.stack(spectrograms)).unsqueeze(1)  # (N, 1, n_mels, frames)
        self.labels = torch.tensor(labels, dtype=torch.long)
        if cache is not None:
            _write_cache(cache, self.log_mel, self.labels, self.bad_files)

    def statistics(self) -> tuple[float, float]:
        """Mean and standard deviation of every log-mel value of this split."""
        return float(self.log_mel.mean()), float(self.log_mel.std())

    def normalise(self, mean: float, std: float) -> None:
        if not std > 0:
            raise ValueError(f"log-mel normalisation needs std > 0, got {std}")
        self.normalised = (self.log_mel - mean) / std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.normalised is None:
            raise RuntimeError("normalise(mean, std) must run before items are read")
        return self.normalised[index], self.labels[index]


class AudioFolder(LogMelSpectrograms):
    """``root/<split>/<class>/*.wav`` (classes sorted by name); the spectrograms are cached beside the clips
    (``<split>/.logmel-<key>.safetensors``, keyed by the files and the transform settings)."""

    def __init__(self, root: str | Path, split: str, config: AudioConfig, on_bad_image: str = "skip"):
        folder = Path(root) / split
        if not folder.is_dir():
            raise FileNotFoundError(f"no audio split folder {folder} (expected {root}/<split>/<class>/*.wav)")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise ValueError(f"{folder} has no class sub-folders (expected {folder}/<class>/*.wav)")
        files = [
            (path, label)
            for label, name in enumerate(classes)
            for path in sorted((folder / name).iterdir())
            if path.suffix.lower() in AUDIO_EXTENSIONS
        ]
        if not files:
            raise ValueError(f"{folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        self.label_names = classes
        clips = [(path, path, label) for path, label in files]
        super().__init__(clips, config, str(folder), on_bad_image, _cache_path(folder, files, config))


class AudioRecords(LogMelSpectrograms):
    """A ``datasets`` split with an audio column (hub id, parquet, arrow): the column is read undecoded
    (``Audio(decode=False)``: bytes or a path) and decoded with soundfile, so no torchcodec is needed."""

    def __init__(self, hf_dataset, audio_column: str, label_column: str | None, config: AudioConfig,
                 where: str, on_bad_image: str = "skip"):  # fmt: skip
        import io

        from datasets import Audio

        from tokenizer.data import check_columns

        check_columns(hf_dataset, audio_column=audio_column, label_column=label_column)
        records = hf_dataset.cast_column(audio_column, Audio(decode=False))
        feature = hf_dataset.features.get(label_column) if label_column else None
        self.label_names = list(getattr(feature, "names", None) or []) or None
        labels = records[label_column] if label_column else [-1] * len(records)
        clips = []
        for i, (audio, label) in enumerate(zip(records[audio_column], labels)):
            name = audio.get("path") or f"{where}[{i}]"
            source = io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio.get("path")
            clips.append((name, source, int(label)))
        super().__init__(clips, config, where, on_bad_image)


def _cache_path(folder: Path, files: list[tuple[Path, int]], config: AudioConfig) -> Path:
    """``<split folder>/.logmel-<key>.safetensors``, keyed by every file's name, size and mtime and the
    transform settings (not the normalisation, applied after)."""
    transform = {k: v for k, v in vars(config).items() if k not in ("mean", "std")}
    listing = [
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns, label) for p, label in files
    ]
    key = hashlib.sha256(json.dumps([transform, listing]).encode()).hexdigest()[:16]
    return folder / f".logmel-{key}.safetensors"


def _write_cache(path: Path, log_mel: torch.Tensor, labels: torch.Tensor, bad_files: list[str]) -> None:
    from safetensors.torch import save_file

    try:
        temporary = path.with_name(path.name + ".tmp")
        save_file({"log_mel": log_mel.contiguous(), "labels": labels}, str(temporary))
        path.with_suffix(".json").write_text(json.dumps({"bad_files": bad_files}))
        temporary.replace(path)  # written last: a cache file is always complete
    except OSError as error:  # a read-only dataset folder: no cache, same result
        logger.info("log-mel cache not written to %s: %s", path.parent, error)


def build_audio_datasets(data) -> tuple[LogMelSpectrograms, LogMelSpectrograms, LogMelSpectrograms | None]:
    """(train, validation, test) of ``data`` (a ``DataConfig``: ``source="audiofolder"``, or a hub / parquet /
    arrow source with ``audio_column``); fills ``data.audio.mean`` / ``std`` from the training split when they
    are None (recorded in the run's config)."""
    audio = data.audio
    if data.source == "audiofolder":
        if data.validation_split is None:
            raise ValueError(
                "data.validation_split is required for data.source=audiofolder (a folder per split)"
            )
        splits = [data.train_split, data.validation_split, data.test_split]
        train, validation, test = (
            AudioFolder(data.path, split, audio, data.on_bad_image) if split else None for split in splits
        )
    else:
        from tokenizer.data import hf_splits

        def wrap(hf, where):
            return AudioRecords(hf, data.audio_column, data.label_column, audio, where, data.on_bad_image)

        parts = hf_splits(data)
        train, validation, test = (
            wrap(hf, f"{data.path} {name}") if hf is not None else None
            for hf, name in zip(parts, ("train", "validation", "test"))
        )
    if audio.mean is None or audio.std is None:
        audio.mean, audio.std = train.statistics()
        logger.info(
            "log-mel normalisation from the training split: mean %.4f, std %.4f", audio.mean, audio.std
        )
    for dataset in (train, validation, test):
        if dataset is not None:
            dataset.normalise(audio.mean, audio.std)
    return train, validation, test


def denormalise(spectrogram: torch.Tensor, audio: AudioConfig) -> torch.Tensor:
    """Normalised model output -> log-mel in the transform's scale (log of the mel magnitude)."""
    return spectrogram * audio.std + audio.mean
