"""What a person running the command-line tools sees: progress bars that do not flood a log file, and errors
that end with one line naming the problem instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from tqdm.auto import tqdm

logger = logging.getLogger("hqvae")

# Errors raised on bad input (a config key, a path, a value): shown as one line. Anything else is a bug and
# keeps its traceback.
USER_ERRORS = (
    ValueError,
    # missing / unreadable files and folders, full disks, and diffusers' "Unable to load weights from checkpoint
    # file for <path>" (a corrupt safetensors file): every one names the file
    OSError,
    FloatingPointError,  # a diverged run: the message names the step and the non-finite term
)
TRACEBACK_ENV = "HQVAE_TRACEBACK"
# Seconds between redraws when stderr is not a terminal (a log file): ~1 line per bar per interval, not
# thousands of carriage-return redraws.
NON_INTERACTIVE_INTERVAL = 30.0


def progress_bar(*args, **kwargs) -> tqdm:
    """``tqdm``; when stderr is not a terminal (a log file), it redraws at most every
    ``NON_INTERACTIVE_INTERVAL`` s and each redraw is a whole line, so log lines never run into a bar."""
    if not _stderr_is_terminal() and "file" not in kwargs:
        kwargs.setdefault("mininterval", NON_INTERACTIVE_INTERVAL)
        kwargs.setdefault("maxinterval", NON_INTERACTIVE_INTERVAL * 4)
        kwargs["file"] = _LineWriter(sys.stderr)
    return tqdm(*args, **kwargs)


class _LineWriter:
    """A file for tqdm that turns carriage-return redraws into complete lines (blank clears dropped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def check_counts(parser, args, minimum: dict[str, int]) -> None:
    """argparse's error (exit 2, naming the flag) for every count below its minimum, e.g.
    ``{"batch_size": 1, "num_workers": 0}`` -> ``--batch-size must be >= 1, got 0``; absent or None flags pass."""
    for name, low in minimum.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def run_cli(main: Callable[..., object], argv=None) -> None:
    """Runs a command's ``main``; a bad-input error ends the output with ``error: <message>`` and exit status 2
    (set ``HQVAE_TRACEBACK=1`` for the traceback). Under ``accelerate launch``, add ``-q`` so that the launcher
    does not print its own traceback after it."""
    try:
        main(argv)
    except USER_ERRORS as error:
        if os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
            raise
        sys.stderr.flush()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
