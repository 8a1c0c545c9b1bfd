"""The README's Python API section runs as written (it loads the bundled SmolLM2, so it is slow)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_the_api_section_has_code():
    blocks = python_blocks("The Python API")
    assert len(blocks) >= 2 and any("affectlens.elicit(" in b for b in blocks)


@pytest.mark.slow
def test_the_readme_python_section_runs_as_written(tmp_path, smollm2):
    # ``smollm2`` skips the test where the bundled model is not installed (and warms its weight cache).
    script = tmp_path / "readme.py"
    script.write_text("\n".join(python_blocks("The Python API")), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs/api/analysis/analysis.json").is_file()
    assert (tmp_path / "runs/api/analysis/comparison/comparison.json").is_file()
    assert (tmp_path / "runs/api/report/report.html").is_file()
