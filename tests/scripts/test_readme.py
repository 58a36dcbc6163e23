"""The README's Python snippets run as written when pasted into a fresh interpreter (those that need the main
job's output are run by hand after it; see the README)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_self_contained_readme_snippets_run_in_a_fresh_interpreter(tmp_path):
    snippets = python_snippets()
    assert len(snippets) >= 3
    standalone = [s for s in snippets if "runs/" not in s]
    assert standalone, "the README should have a snippet that runs without a trained model"
    for snippet in standalone:
        proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": ""})  # fmt: skip
        assert proc.returncode == 0, f"{snippet}\n{proc.stderr[-2000:]}"


def test_readme_names_the_folders_the_main_job_writes():
    text = (ROOT / "README.md").read_text()
    main_job = (ROOT / "scripts" / "main_job.py").read_text()
    assert 'f"runs/main_{args.model}{suffix}"' in main_job
    for path in ("runs/main_sqvae2/pipeline", "runs/main_sqvae2/tokenizer", "runs/main_sqvae2/report"):
        assert path in text, path
