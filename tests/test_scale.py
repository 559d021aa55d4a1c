"""benchmarks/scale.py --smoke: the model-axis curve runs end to end (the tiny model at M 1 and
2, the engine's strategy per M) and writes its table and plot."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_scale_smoke_writes_its_table_and_plot(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["scale.py", "--smoke"])
    import scale

    md = scale.main(["--smoke", "--out", str(tmp_path)])
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| tiny b8 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["1", "2"]
    assert all("model-steps/s" not in row and row.count("|") == 12 for row in rows)
    assert "- versions: jax" in text and "- tiny b8: 1->2:" in text
    assert md.with_suffix(".png").stat().st_size > 0
