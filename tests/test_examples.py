"""Every example runs in its smoke mode, so none rots."""
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted(pathlib.Path(__file__).resolve().parent.parent.joinpath("examples")
                  .glob("*.py"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_smoke(path):
    assert path.read_text().lstrip().startswith('"""'), "examples start with a docstring"
    env = dict(os.environ, GBUFFEREVENT_SMOKE="1")
    out = subprocess.run([sys.executable, str(path), "--smoke"], capture_output=True,
                         text=True, timeout=120, env=env, cwd=path.parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr
