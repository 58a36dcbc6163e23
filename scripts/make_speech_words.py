"""A small labelled speech dataset that can be built offline: Debian's ``espeak-ng`` speaking the ten digits and
twenty command words across its English accents, voice variants, pitches and speeds.

    apt-get install -y espeak-ng          # once (the set-up script does not install it)
    .venv/bin/python scripts/make_speech_words.py --output data/speech_words

Writes ``<output>/<split>/<word>/<accent>_<variant>_p<pitch>_s<speed>.wav`` (22,050 Hz, 16 bit, mono), the
layout ``data.source: audiofolder`` reads, and ``<output>/manifest.json``. Splits are speaker-disjoint: every
clip of one accent is in the test split, of another in the validation split, the rest train. With the defaults:
30 words x 7 accents x 8 variants x 2 pitches x 2 speeds = 6,720 clips (4,800 / 960 / 960), ~227 MB, about a
minute on 2 cores. An existing complete dataset is left as it is (``--force`` rebuilds).

This is synthetic speech: one engine, clean, no noise or rooms. It exercises the audio path of the tokenizers
(log-mel, RSQ-VAE vs RQ-VAE) on real spoken words; it is no stand-in for UrbanSound8K's environmental sounds
(Table 2), whose configs read the real dataset from a folder in the same layout.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from pathlib import Path

logger = logging.getLogger("make_speech_words")

WORDS = [
    *["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    *["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"],
    *["forward", "backward", "follow", "learn", "visual", "bird", "house", "tree", "happy", "wow"],
]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
SPLIT_OF_ACCENT = {"en-029": "test", "en-gb-x-gbcwmd": "validation"}  # the rest: train
VARIANTS = ["m1", "m3", "m5", "m7", "f1", "f2", "f4", "klatt"]
PITCHES = [35, 65]
SPEEDS = [130, 190]


def clip_name(accent: str, variant: str, pitch: int, speed: int) -> str:
    return f"{accent}_{variant}_p{pitch}_s{speed}.wav"


def build(output: Path, force: bool = False) -> dict:
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is not installed: apt-get install -y espeak-ng")
    manifest_path = output / "manifest.json"
    if manifest_path.exists() and not force:
        logger.info("%s exists (use --force to rebuild)", manifest_path)
        return json.loads(manifest_path.read_text())
    from tokenizer.console import progress_bar

    jobs = [
        (word, accent, variant, pitch, speed)
        for word in WORDS
        for accent in ACCENTS
        for variant in VARIANTS
        for pitch in PITCHES
        for speed in SPEEDS
    ]
    counts: dict[str, int] = {}
    for word, accent, variant, pitch, speed in progress_bar(jobs, desc="espeak-ng"):
        split = SPLIT_OF_ACCENT.get(accent, "train")
        folder = output / split / word
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / clip_name(accent, variant, pitch, speed)
        if not path.exists() or force:
            temporary = path.with_suffix(".tmp.wav")
            command = ["espeak-ng", "-v", f"{accent}+{variant}", "-p", str(pitch), "-s", str(speed), "-w",
                       str(temporary), word]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
            temporary.replace(path)  # a killed run never leaves a half-written clip
        counts[split] = counts.get(split, 0) + 1
    manifest = {
        "engine": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip(),
        "words": WORDS,
        "accents": ACCENTS,
        "split_of_accent": SPLIT_OF_ACCENT,
        "variants": VARIANTS,
        "pitches": PITCHES,
        "speeds": SPEEDS,
        "clips": counts,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    logger.info("%s clips per split -> %s", counts, output)
    return manifest


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("data/speech_words"))
    parser.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")
    args = parser.parse_args(argv)
    return build(args.output, args.force)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
