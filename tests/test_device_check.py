"""benchmarks/device_check.py --smoke: the GPU session's one command runs end to end on CPU and
writes its report (md, json, png) with every section."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_device_check_smoke_writes_its_report(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["JAX_NUM_CPU_DEVICES"] = "1"  # the suite's fake devices would shard the model axis
    command = [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--smoke"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stems = {p.suffix: p for p in tmp_path.glob("device-*")}
    assert set(stems) == {".md", ".json", ".png"}, sorted(tmp_path.iterdir())
    result = json.loads(stems[".json"].read_text())
    assert result["smoke"] and result["platform"] == "cpu"
    assert result["engine_lowering"] == "matmul"  # the CPU rule, as before
    assert set(result["default_lowering_table"].values()) == {"matmul"}
    # Lowerings: every op and lowering measured (or skipped with a reason), auto's pick named.
    ops = {(r["op"], r["lowering"]) for r in result["lowerings"]}
    assert ops == {("conv", "lax"), ("conv", "matmul"), ("conv_transpose", "lax"),
                   ("conv_transpose", "matmul"), ("conv_transpose", "zero_insertion")}  # fmt: skip
    for r in result["lowerings"]:
        assert r["auto"] == "matmul"
        assert "error" not in r, r.get("error")
        assert "call_s" in r or r.get("skipped")
    assert result["verdicts"]
    first = result["lowerings"][0]
    assert first["call_s"] > 0 and first["compile_s"] >= 0 and first["program_bytes"] > 0
    # The engine's program on a deconv painter bucket, the loop, precision, another lowering.
    measured = [r for r in result["families"] if "rate" in r]
    assert measured and all("error" not in r for r in result["families"])
    assert {r["precision"] for r in result["families"]} == {"highest", "default"}
    assert {r["lowering"] for r in result["families"]} == {"matmul", "lax"}
    assert all("error" not in r for r in result["loop"])
    assert [(e["preset"], e["precision"]) for e in result["estimates"]] == [
        ("paper", "highest"), ("paper", "default"),
        ("paper-halving", "highest"), ("paper-halving", "default"),
    ]  # fmt: skip
    assert "seconds" in result["estimates"][0], result["estimates"]
    # (the default-precision rate can be skipped by the time budget on a loaded machine)
    assert all("seconds" in e or e.get("skipped") for e in result["estimates"])
    halving = [e for e in result["estimates"] if e["preset"] == "paper-halving" and "seconds" in e]
    assert all(e["pruned_seconds"] < e["seconds"] for e in halving)
    # The programs lowered for this platform, cuda and tpu: on the matmul rule's fast path.
    checked = result["lowering_check"]
    assert {r["platform"] for r in checked} == {"cpu", "cuda", "tpu"}
    assert all(r.get("ok") for r in checked), checked
    # Memory: the host's estimate (the device's own analysis on CPU is the same), the chunk run.
    (mem,) = result["memory"]
    assert mem["host_bytes"] == mem["device_analysis_bytes"] > 0 and mem["run_s"] > 0
    assert [r["num_models"] for r in result["scale"] if "rate" in r] == [1, 2]
    assert result["torch"]  # measured, or skipped because torch is not installed
    report = stems[".md"].read_text()
    for heading in ("## 1. Lowerings", "## 2. Fig S2", "## 3. Engine vs", "## 4. Precision",
                    "## 5. Estimated time", "## 6. The programs", "## 7. Memory",
                    "## 8. The model axis", "## 9. The zoo against torch"):  # fmt: skip
        assert heading in report
    assert "- command:" in report and "- versions:" in report
