"""What the benchmarks record: the command as a user would type it, never this machine's paths."""

import importlib.util
import json
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _benchlib():
    spec = importlib.util.spec_from_file_location("benchlib", REPO / "benchmarks" / "benchlib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_is_recorded_as_typed():
    command_line = _benchlib().command_line
    repo = "/home/me/coordjax"
    assert command_line([f"{repo}/benchmarks/zoo.py", "--quick"], {}, repo) == (
        "python benchmarks/zoo.py --quick"
    )
    assert command_line(["benchmarks/zoo.py", "--out", "a b"], {"JAX_PLATFORMS": "cpu"}, repo) == (
        "JAX_PLATFORMS=cpu python benchmarks/zoo.py --out 'a b'"
    )
    assert command_line([f"{repo}/benchmarks/smoke.py"], {}, "/elsewhere") == (
        "python benchmarks/smoke.py"
    )


def _commands():
    """Every recorded ``command:`` of the committed results (Markdown lines, JSON fields)."""
    for path in sorted(RESULTS.glob("*.md")) + sorted(RESULTS.glob("*.json")):
        text = path.read_text()
        found = re.findall(r"command: `([^`]*)`", text)
        if path.suffix == ".json":
            found += [v for k, v in _items(json.loads(text)) if k == "command"]
        yield from ((path.name, command) for command in found)


def _items(tree):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield key, value
            yield from _items(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _items(value)


def test_committed_records_hold_no_interpreter_path():
    commands = list(_commands())
    assert len(commands) >= 8
    for name, command in commands:
        program = next(word for word in command.split() if "=" not in word)
        assert program == "python", (name, command)
