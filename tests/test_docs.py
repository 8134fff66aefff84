"""Every ```python snippet in docs/*.md runs (each file's snippets in order,
in one fresh interpreter), so the guides cannot rot."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

DOCS = sorted(pathlib.Path(__file__).resolve().parent.parent.joinpath("docs").glob("*.md"))
SNIPPET = re.compile(r"```python\n(.*?)```", re.S)


def test_guides_exist():
    names = {p.stem for p in DOCS}
    assert {"pairs", "caps", "differences", "filters"} <= names


@pytest.mark.parametrize("path", [p for p in DOCS if SNIPPET.search(p.read_text())],
                         ids=lambda p: p.name)
def test_doc_snippets_run(path, tmp_path):
    code = "\n\n".join(SNIPPET.findall(path.read_text()))
    script = tmp_path / (path.stem + "_snippets.py")
    script.write_text(code)
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=root)          # this checkout, not an install
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
