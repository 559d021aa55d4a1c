"""Every Python block of README.md and of the documentation's pages (docs/**/*.md) runs as
written, so neither can rot; the API reference lists every public name.

A block preceded by ``<!-- readme-test: slow ... -->`` trains for long and runs only with
``pytest -m slow``. Blocks run in a temporary directory holding ``runs/smoke``, a finished tiny
sweep, for the blocks that read a workdir.
"""

import importlib
import pathlib
import re
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<mark>\w+)[^>]*-->\n)?```python\n(?P<code>.*?)```", re.S
)


def python_blocks(pages: list[pathlib.Path] = PAGES) -> list:
    blocks = []
    for page in pages:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        for match in BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n") + 1
            marks = [pytest.mark.slow] if match.group("mark") == "slow" else []
            blocks.append(pytest.param(match.group("code"), f"{name}:{line}",
                                       id=f"{name}:line{line}", marks=marks))  # fmt: skip
    return blocks


def test_readme_has_python_blocks():
    assert len(python_blocks([README])) >= 4
    assert len(python_blocks()) >= len(python_blocks([README])) + 6  # the guides have theirs


PUBLIC_MODULES = ["coordjax", "coordjax.linen", "coordjax.nnx", "coordjax.functional",
                  "coordjax.conv", "coordjax.datasets", "coordjax.models", "coordjax.tasks",
                  "coordjax.train", "coordjax.sweep", "coordjax.report"]  # fmt: skip


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_api_reference_lists_every_public_name(name):
    """docs/api/<module>.rst's autosummary names every public name of the module (its
    ``__all__``, or for ``coordjax.train`` its re-exports), submodules aside."""
    module = importlib.import_module(name)
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    public = {n for n in public if not isinstance(getattr(module, n), type(module))}
    listed = set(re.findall(r"^   (\w+)$", (DOCS / "api" / f"{name}.rst").read_text(), re.M))
    assert public <= listed, sorted(public - listed)


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory, tiny_workdir):
    """A directory with ``runs/smoke``: the session's finished tiny sweep (the README's smoke
    takes minutes)."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(tiny_workdir[0], root / "runs" / "smoke")
    return root


@pytest.mark.parametrize("code, where", python_blocks())
def test_readme_python_block_runs(code, where, readme_dir, monkeypatch):
    monkeypatch.chdir(readme_dir)
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, where, "exec"), namespace)  # blocks assert their claims
