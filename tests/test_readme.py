"""Every Python block of README.md runs as written, so the README cannot rot.

A block preceded by ``<!-- readme-test: slow ... -->`` trains for long and runs only with
``pytest -m slow``. Blocks run in a temporary directory holding ``runs/smoke``, a finished tiny
sweep, for the blocks that read a workdir.
"""

import pathlib
import re

import pytest

from coordjax.sweep import EngineOptions, Grid, run_sweep, union

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<mark>\w+)[^>]*-->\n)?```python\n(?P<code>.*?)```", re.S
)


def python_blocks() -> list:
    text = README.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        line = text[: match.start("code")].count("\n") + 1
        marks = [pytest.mark.slow] if match.group("mark") == "slow" else []
        blocks.append(pytest.param(match.group("code"), line, id=f"line{line}", marks=marks))
    return blocks


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 4


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory):
    """A directory with ``runs/smoke``: a finished tiny sweep (the README's smoke is minutes)."""
    root = tmp_path_factory.mktemp("readme")
    grid = Grid("tiny", base={"model": "tiny", "batch_size": 256, "epochs": 1, "eval_every": 1},
                axes={"split": ["uniform", "quadrant"]})  # fmt: skip
    run_sweep(union("classification", [grid]), root / "runs" / "smoke",
              options=EngineOptions(progress=False))  # fmt: skip
    return root


@pytest.mark.parametrize("code, line", python_blocks())
def test_readme_python_block_runs(code, line, readme_dir, monkeypatch):
    monkeypatch.chdir(readme_dir)
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, f"README.md:{line}", "exec"), namespace)  # blocks assert their claims
