"""What a person at a terminal or reading a log sees: one-line errors, progress that does not flood a log."""

import io
import logging
import sys

import pytest

from tokenizer.console import _LineWriter, progress_bar, run_cli


def test_bad_input_errors_end_with_one_line_and_status_2(capsys, monkeypatch):
    monkeypatch.delenv("HQVAE_TRACEBACK", raising=False)

    def main(argv):
        raise ValueError("optimizer.learning_rate: expected float, got str 'fast'")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: optimizer.learning_rate: expected float, got str 'fast'"
    )
    monkeypatch.setenv("HQVAE_TRACEBACK", "1")
    with pytest.raises(ValueError):
        run_cli(main)


def test_bugs_keep_their_traceback():
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_cli(main)


def test_progress_in_a_log_file_is_whole_lines_that_log_lines_never_run_into(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("test_console")
    log.addHandler(handler)
    try:
        bar = progress_bar(total=1000, desc="train")
        assert isinstance(bar.fp._wrapped, _LineWriter) and bar.mininterval >= 30
        for step in range(1000):
            bar.update(1)
            if step == 500:
                log.warning("validation at step 500")
        bar.close()
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert "validation at step 500" in lines
    assert len(lines) <= 4 and all("\r" not in line for line in lines), lines
