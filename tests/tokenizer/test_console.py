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


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("prior.extract", ["--tokenizer", "t", "--output", "o", "--max-items", "0"], "--max-items must be >= 1, got 0"),
        ("prior.extract", ["--tokenizer", "t", "--output", "o", "--num-workers", "-1"], "--num-workers must be >= 0"),
        ("eval.reconstruction", ["--tokenizer", "t", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        ("eval.reconstruction", ["--tokenizer", "t", "--max-images", "0"], "--max-images must be >= 1, got 0"),
        ("eval.linear_probe", ["--tokenizer", "t", "--epochs", "0"], "--epochs must be >= 1, got 0"),
        ("pipelines.sample", ["--pipeline", "p", "--output", "o.png", "--per-label", "0"], "--per-label must be >= 1"),
        ("eval.fid", ["data", "--data-config", "d.yaml", "--output", "o", "--channels", "0"], "invalid choice: 0"),
    ],
)  # fmt: skip
def test_every_command_names_a_bad_count_before_reading_anything(command, argv, message, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(command).main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_corrupt_weights_file_is_a_one_line_error_naming_it(tmp_path, capsys, monkeypatch):
    from eval.reconstruction import main as reconstruction_main
    from tokenizer import HQVAE

    monkeypatch.delenv("HQVAE_TRACEBACK", raising=False)
    HQVAE(in_channels=1, hidden_channels=8, embedding_dim=4, codebook_sizes=8).save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    (tmp_path / "data.yaml").write_text("data: {path: none}")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            reconstruction_main, ["--tokenizer", str(tmp_path), "--data-config", str(tmp_path / "data.yaml")]
        )
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(weights) in last
