"""The README's Python example runs as written, with the interpreter it names; shipped READMEs are finished."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_python_example_names_its_interpreter_and_runs(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    intro, _, rest = readme.partition("**From Python**")
    assert rest, "the README has a 'From Python' example"
    preface, block = rest.split("```python", 1)
    assert ".venv/bin/python" in preface, "say which interpreter runs the example"
    code = block.split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", code + "\nprint(image.shape, matrix.shape)"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("(256, 256) (3, 4)")


def test_shipped_readmes_have_no_leftover_todo():
    for readme in [*REPO.glob("Resources/**/README.md"), *REPO.glob("Testing/**/README.md"), REPO / "README.md"]:
        text = readme.read_text(encoding="utf-8")
        assert not re.search(r"\bTODO\b|TODO\(", text), f"{readme.relative_to(REPO)} has a TODO"


def test_shipped_dicom_series_keeps_its_attribution():
    data = REPO / "Testing" / "Data"
    assert len(list((data / "abdomen_dicom_20slices").iterdir())) == 20
    readme = (data / "README.md").read_text(encoding="utf-8")
    assert "TotalSegmentator" in readme and "Apache License 2.0" in readme and "Wasserthal" in readme
    assert "Apache License" in (data / "TOTALSEGMENTATOR_REPO_LICENSE_Apache-2.0.txt").read_text()
