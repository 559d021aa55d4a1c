"""Fan-out: one sweep trained by independent processes sharing one workdir
(coordjax.sweep.fanout), against the single-process run of the same sweep, bit for bit."""

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pandas as pd
import pytest
from tiny_sweeps import assert_bitwise_equal, sweep_of_file, tiny_sweep_file

from coordjax import cli
from coordjax.sweep import EngineOptions, fanout, load_run, run_sweep
from coordjax.sweep import workdir as wd
from coordjax.sweep.status import status_text, sweep_status

# Three buckets (batch sizes) of the tiny model, 4 epochs: long enough to kill mid-bucket.
FANNED_GRIDS = """[
    Grid("a", base={**BASE, "epochs": 4, "split": "uniform"}, axes={"lr": [0.05, 0.01]}),
    Grid("b", base={**BASE, "epochs": 4, "split": "uniform", "batch_size": 512},
         axes={"lr": [0.05, 0.01]}),
    Grid("c", base={**BASE, "epochs": 4, "split": "uniform", "batch_size": 128},
         axes={"lr": [0.02]}),
]"""


@pytest.fixture
def sweep_file(tmp_path):
    return tiny_sweep_file(tmp_path, FANNED_GRIDS)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The single-process run: its workdir and results."""
    root = tmp_path_factory.mktemp("straight")
    sweep = sweep_of_file(tiny_sweep_file(root, FANNED_GRIDS))
    results = run_sweep(sweep, root / "w", preset="t", options=EngineOptions(progress=False))
    return root / "w", results


def _launch(sweep_file, workdir, index, count, *extra, report=False) -> subprocess.Popen:
    command = [sys.executable, "-m", "coordjax.cli", "sweep", str(sweep_file), "--preset", "t",
               "--workdir", str(workdir), "--no-progress", *([] if report else ["--no-report"]),
               "--task-index", str(index), "--task-count", str(count), *extra]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _same_as_straight(workdir, straight):
    root, results = straight
    assert_bitwise_equal(pd.read_csv(workdir / "results.csv"), pd.read_csv(root / "results.csv"))
    for run_id in set(results["run_id"]):
        fanned, alone = load_run(workdir, run_id), load_run(root, run_id)
        for a, b in zip(jax.tree.leaves(fanned), jax.tree.leaves(alone), strict=True):
            np.testing.assert_array_equal(a, b)


def _trained_by(workdir) -> dict[str, list[int]]:
    """bucket_id -> the task indices whose done markers say they trained it."""
    done = {}
    for marker in (workdir / fanout.CLAIMS).glob("*/*.done"):
        payload = json.loads(marker.read_text())
        done.setdefault(marker.parent.name, []).append(payload["task_index"])
    return done


# -- processes -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_three_processes_train_each_bucket_once_and_equal_one_process(
    tmp_path, sweep_file, straight
):
    workers = [_launch(sweep_file, tmp_path / "w", i, 3) for i in range(3)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
    assert "task 1 of 3 (from --task-index)" in outputs[1]
    trained = _trained_by(tmp_path / "w")
    assert sorted(trained) == sorted(b["bucket_id"] for b in wd.read_config(straight[0])["plan"])
    assert all(len(tasks) == 1 for tasks in trained.values()), trained
    _same_as_straight(tmp_path / "w", straight)
    status = sweep_status(tmp_path / "w")
    assert status["counts"]["done"] == 3 and status["model_steps"] == status["planned_model_steps"]


def _wait_for(condition, victim, seconds=300):
    deadline = time.monotonic() + seconds
    while not condition():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _mid_bucket(workdir) -> bool:
    """A claim is held and its bucket has a checkpoint but is not done."""
    for claim in (workdir / fanout.CLAIMS).glob("*/*.*.json"):
        bucket = claim.parent.name
        done = list(claim.parent.glob("*.done"))
        saved = (workdir / "checkpoints" / bucket).glob("*")
        if not done and any(p.name.isdigit() for p in saved):  # a finished checkpoint
            return True
    return False


@pytest.mark.integration
def test_sigkill_one_process_then_rerun_its_command_equals_uninterrupted(
    tmp_path, sweep_file, straight
):
    victim = _launch(sweep_file, tmp_path / "w", 0, 2)
    _wait_for(lambda: _mid_bucket(tmp_path / "w"), victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    status = sweep_status(tmp_path / "w")
    assert status["counts"]["dead"] == 1  # its heartbeat is fresh, its process gone
    held = [b for b in status["buckets"] if b["state"] == "dead"][0]
    assert held["task"] == 0 and held["pid"] == victim.pid
    assert "dead     " in status_text(status)

    # The same task's command takes its own dead claim at once (it holds the task's lock now);
    # task 1 trains its share meanwhile.
    rerun = [_launch(sweep_file, tmp_path / "w", i, 2) for i in (0, 1)]
    outputs = [w.communicate(timeout=600)[0] for w in rerun]
    for worker, output in zip(rerun, outputs, strict=True):
        assert worker.returncode == 0, output
    assert "resumed at epoch" in "".join(outputs)
    _same_as_straight(tmp_path / "w", straight)


@pytest.mark.integration
def test_a_killed_process_is_taken_over_at_once_and_a_survivor_writes_the_report(
    tmp_path, sweep_file, straight
):
    # Task 0 (which wrote the report before) is killed; task 1, on the same machine, takes its
    # bucket over as soon as it looks (not after --stale-after, 600 s), and writes the report.
    workers = [_launch(sweep_file, tmp_path / "w", i, 2, report=True) for i in (0, 1)]
    _wait_for(lambda: _mid_bucket(tmp_path / "w"), workers[0])
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].communicate()
    output = workers[1].communicate(timeout=600)[0]
    assert workers[1].returncode == 0, output
    assert "took over from task 0" in output and "its process is gone" in output, output
    for directory in (tmp_path / "w" / fanout.CLAIMS).glob("*/"):
        for old in directory.glob("*.0.json"):  # the killed process's claim, left as it was
            last_beat = json.loads(old.read_text())["heartbeat"]
            done = json.loads(next(directory.glob(f"{old.name.split('.')[0]}.done")).read_text())
            assert done["task_index"] == 1 and done["claimed"] - last_beat < 120
    assert (tmp_path / "w" / "report" / "report.md").is_file()
    assert "report: " in output
    _same_as_straight(tmp_path / "w", straight)


# -- refusals ------------------------------------------------------------------------------------


def test_the_same_index_twice_is_refused_in_one_line(tmp_path, sweep_file, capsys):
    workdir = tmp_path / "w"
    held = fanout.TaskSlot(1, 3)
    workdir.mkdir()
    with fanout.task_lock(workdir, held):
        before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
        code = cli.main(["sweep", str(sweep_file), "--preset", "t", "--workdir", str(workdir),
                         "--task-index", "1", "--task-count", "3", "--no-progress"])  # fmt: skip
        after = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    start, *err = capsys.readouterr().err.strip().splitlines()  # the start line, the error
    assert start.startswith("coordjax: task 1 of 3 (from --task-index)")
    assert code == 2 and len(err) == 1 and "task index 1 is already running" in err[0], err
    assert set(after) <= set(before) | {pathlib.Path(".lock"), pathlib.Path(".records.lock")}


def test_a_different_sweep_on_the_workdir_is_refused_and_nothing_written(
    tmp_path, sweep_file, tiny_workdir, capsys
):
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir[0], workdir)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = cli.main(["sweep", str(sweep_file), "--preset", "t", "--workdir", str(workdir),
                     "--task-index", "1", "--task-count", "2", "--no-progress"])  # fmt: skip
    _, *err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds a different sweep" in err[0], err
    after = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
    assert after == before


def test_a_single_process_run_and_a_task_exclude_each_other(tmp_path, sweep_file, capsys):
    workdir = tmp_path / "w"
    with wd.locked(workdir):
        code = cli.main(["sweep", str(sweep_file), "--preset", "t", "--workdir", str(workdir),
                         "--task-index", "0", "--task-count", "2", "--no-progress"])  # fmt: skip
    assert code == 2 and "in use by another sweep" in capsys.readouterr().err
    with wd.locked(workdir, shared=True):
        assert sweep_status  # a task holds the lock shared: a single process is refused
        with pytest.raises(wd.WorkdirError, match="in use"):
            with wd.locked(workdir):
                pass


def test_tasks_starting_together_are_not_refused_while_one_removes_debris(tmp_path, monkeypatch):
    # The first task holds the lock alone while it removes debris, then shares it.
    cleaning, done = threading.Event(), threading.Event()

    def slow_removal(workdir):
        cleaning.set()
        time.sleep(0.3)
        return []

    monkeypatch.setattr(wd, "remove_debris", slow_removal)

    def first():
        with wd.locked(tmp_path, shared=True):
            done.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert cleaning.wait(5)
        with wd.locked(tmp_path, shared=True):  # waits the 0.3 s, not refused
            pass
    finally:
        done.set()
        thread.join()


# -- the task slot -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index, count, environ, expected",
    [
        (2, 3, {}, (2, 3, "--task-index")),
        (None, None, {}, None),
        (None, None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "5"},
         (4, 5, "SLURM_ARRAY_TASK_ID")),
        (None, None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
                      "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3, "SLURM_ARRAY_TASK_ID")),
        (None, 4, {"JOB_COMPLETION_INDEX": "3"}, (3, 4, "JOB_COMPLETION_INDEX")),
        (1, 2, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "9"},
         (1, 2, "--task-index")),
    ],
)  # fmt: skip
def test_task_slot_from_flags_or_the_scheduler(index, count, environ, expected):
    slot = fanout.task_slot(index, count, environ)
    assert (slot if slot is None else (slot.index, slot.count, slot.source)) == expected


@pytest.mark.parametrize(
    "index, count, environ, message",
    [
        (3, 3, {}, r"task_index must be in 0..2 \(task_count 3\); got 3"),
        (-1, 2, {}, "task_index must be in 0..1"),
        (0, 0, {}, "task_count must be >= 1"),
        (1, None, {}, "--task-index needs --task-count"),
        (None, 2, {}, "--task-count needs --task-index"),
        (None, None, {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
        (None, None, {"JOB_COMPLETION_INDEX": "1"}, "pass --task-count"),
        (None, 2, {"JOB_COMPLETION_INDEX": "2"}, r"^JOB_COMPLETION_INDEX=2 is outside 0..1"),
        (None, 2, {"JOB_COMPLETION_INDEX": "one"}, "JOB_COMPLETION_INDEX must be an integer"),
        # The scheduler's variables are named, never a flag nobody passed.
        (None, None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2"},
         r"^SLURM_ARRAY_TASK_ID=3 is task 3, outside 0..1 \(SLURM_ARRAY_TASK_COUNT=2\)"),
        (None, None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
                      "SLURM_ARRAY_TASK_COUNT": "2"},
         r"^SLURM_ARRAY_TASK_ID=3 minus SLURM_ARRAY_TASK_MIN=1 is task 2, outside 0..1"),
        (None, 2, {"SLURM_ARRAY_TASK_ID": "2"}, r"outside 0..1 \(--task-count=2\)"),
    ],
)  # fmt: skip
def test_task_slot_errors_name_what_is_allowed(index, count, environ, message):
    with pytest.raises(fanout.FanOutError, match=message):
        fanout.task_slot(index, count, environ)


def test_cli_rejects_fan_out_flags_in_one_line(sweep_file, tmp_path, capsys, monkeypatch):
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    common = ["sweep", str(sweep_file), "--preset", "t", "--workdir", str(tmp_path / "w")]
    cases = {
        ("--task-index", "3", "--task-count", "3"): "--task-index must be in 0..2",
        ("--extend", "--restart"): "--extend (keep the workdir's runs",
        ("--task-index", "0", "--task-count", "2", "--distributed"): "--distributed",
        ("--task-index", "0", "--task-count", "2", "--restart"): "--restart cannot",
        ("--stale-after", "5"): "--stale-after applies to a fanned-out sweep",
        ("--task-index", "0", "--task-count", "2", "--stale-after", "0"): "--stale-after must",
    }
    for flags, message in cases.items():
        assert cli.main([*common, *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (flags, err)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert cli.main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SLURM_ARRAY_TASK_ID=3" in err[0] and "--task-index" not in err[0]
    assert not (tmp_path / "w").exists()


# -- assignment and claims -----------------------------------------------------------------------


def test_assignment_is_deterministic_and_balanced():
    costs = [9.0, 1.0, 7.0, 3.0, 3.0, 5.0, 2.0]
    owners = fanout.assign(costs, 3)
    assert owners == fanout.assign(costs, 3)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == t) for t in range(3)]
    assert max(loads) - min(loads) <= max(costs) and sorted(loads) == [10.0, 10.0, 10.0]
    assert fanout.assign(costs, 1) == [0] * len(costs)
    order = fanout.work_order(owners, 1)
    assert sorted(order) == list(range(len(costs)))
    assert [owners[i] for i in order][: owners.count(1)] == [1] * owners.count(1)


def test_claims_are_exclusive_and_a_live_claim_is_never_taken(tmp_path):
    a = fanout.Claims(tmp_path, fanout.TaskSlot(0, 2), stale_after=60)
    b = fanout.Claims(tmp_path, fanout.TaskSlot(1, 2), stale_after=60)
    held = a.try_claim("bucket", 4)
    assert held is not None and b.try_claim("bucket", 4) is None
    assert b.try_claim("bucket", 2) is not None  # another stage is another claim
    # Aged past the timeout, the claim goes to exactly one taker; the old owner sees it lost.
    payload = json.loads(held.path.read_text())
    payload["heartbeat"] -= 120
    held.path.write_text(json.dumps(payload))
    c = fanout.Claims(tmp_path, fanout.TaskSlot(1, 3), stale_after=60)
    taken = b.try_claim("bucket", 4)
    assert taken is not None and taken.generation == 1 and c.try_claim("bucket", 4) is None
    with pytest.raises(fanout.ClaimLost):
        held.check()
    b.mark_done(taken)
    assert a.done("bucket", 4) and a.try_claim("bucket", 4) is None


def test_the_heartbeat_keeps_a_claim_fresh_and_an_error_releases_it(tmp_path):
    claims = fanout.Claims(tmp_path, fanout.TaskSlot(0, 1), stale_after=2, heartbeat_s=0.05)
    claim = claims.try_claim("bucket", 1)
    first = json.loads(claim.path.read_text())["heartbeat"]
    with pytest.raises(RuntimeError):
        with claims.heartbeat(claim):
            time.sleep(0.3)
            assert json.loads(claim.path.read_text())["heartbeat"] > first
            raise RuntimeError("boom")
    assert not claim.path.exists() and not claims.done("bucket", 1)


def test_a_beat_in_flight_does_not_write_back_a_released_claim(tmp_path, monkeypatch):
    # The error arrives while a beat is writing: the release must wait for it, or the write
    # brings the claim back (it did under load).
    writing = threading.Event()
    write = fanout.atomic_write_text

    def slow_write(path, text):
        writing.set()
        time.sleep(0.2)
        write(path, text)

    monkeypatch.setattr(fanout, "atomic_write_text", slow_write)
    claims = fanout.Claims(tmp_path, fanout.TaskSlot(0, 1), stale_after=60, heartbeat_s=0.01)
    claim = claims.try_claim("bucket", 1)
    with pytest.raises(RuntimeError):
        with claims.heartbeat(claim):
            assert writing.wait(5)
            raise RuntimeError("boom")
    assert not claim.path.exists()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _edit(claim, **changes):
    payload = {**json.loads(claim.path.read_text()), **changes}
    claim.path.write_text(json.dumps(payload))
    return payload


def test_a_claim_records_its_holder_and_the_period_it_promises(tmp_path):
    claims = fanout.Claims(tmp_path, fanout.TaskSlot(0, 2), stale_after=42)
    payload = json.loads(claims.try_claim("bucket", 2).path.read_text())
    assert payload["pid"] == os.getpid() and payload["stale_after"] == 42
    assert payload["heartbeat_s"] == pytest.approx(4.2)
    if sys.platform.startswith("linux"):  # the start time, from /proc/<pid>/stat
        fields = pathlib.Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
        assert payload["process_start"] == int(fields[19])
    assert fanout.holder_state(payload) == "alive"


def test_a_dead_process_on_this_machine_is_known_at_once(tmp_path):
    holder = fanout.Claims(tmp_path, fanout.TaskSlot(0, 2), stale_after=600)
    taker = fanout.Claims(tmp_path, fanout.TaskSlot(1, 2), stale_after=600)
    held = holder.try_claim("bucket", 2)
    assert taker.try_claim("bucket", 2) is None  # alive, heartbeat fresh
    _edit(held, pid=_dead_pid())  # its heartbeat is fresh, its process gone
    taken = taker.try_claim("bucket", 2)
    assert taken is not None and taken.generation == 1
    # A live pid that started at another time is another process (the pid was reused).
    other = taker.try_claim("other", 2)
    _edit(other, process_start=(other.payload["process_start"] or 0) + 1)
    assert holder.try_claim("other", 2) is not None or not sys.platform.startswith("linux")


def test_staleness_is_judged_by_the_holders_period_not_the_readers(tmp_path):
    # Another machine's claim: only its heartbeat speaks, against the stale_after it recorded.
    holder = fanout.Claims(tmp_path, fanout.TaskSlot(0, 2), stale_after=600)
    impatient = fanout.Claims(tmp_path, fanout.TaskSlot(1, 2), stale_after=8)
    held = holder.try_claim("bucket", 2)
    payload = _edit(held, host="elsewhere", heartbeat=time.time() - 29)  # beats every 30 s
    assert fanout.holder_state(payload) == "alive" and impatient.try_claim("bucket", 2) is None
    payload = _edit(held, heartbeat=time.time() - 601)
    assert fanout.holder_state(payload) == "stale"
    assert impatient.try_claim("bucket", 2) is not None
    # A claim of an older version records no period: the reader's applies.
    old = holder.try_claim("old", 2)
    payload = _edit(old, host="elsewhere", stale_after=None, heartbeat=time.time() - 20)
    assert fanout.holder_state(payload, default_stale_after=8) == "stale"
    # A process of this machine that runs but stopped beating (it hangs) goes stale too.
    hung = holder.try_claim("hung", 2)
    assert fanout.holder_state(_edit(hung, heartbeat=time.time() - 601)) == "stale"


def test_a_requeued_task_takes_back_its_own_claims_first(tmp_path):
    ids, stages = ["b0", "b1", "b2"], [2, 2, 2]
    dead = fanout.Claims(tmp_path, fanout.TaskSlot(1, 2))
    _edit(dead.try_claim("b2", 2), pid=_dead_pid())  # task 1 died holding b2
    requeued = fanout.Claims(tmp_path, fanout.TaskSlot(1, 2))
    trained = []
    count = fanout.run_stage(requeued, ids, stages, [1, 0, 2],
                             lambda position, claim: trained.append(position))  # fmt: skip
    assert count == 3 and trained == [2, 1, 0]


# -- status --------------------------------------------------------------------------------------


def test_status_says_dead_for_a_claim_whose_process_is_gone_and_starting_early(
    tiny_workdir, tmp_path, capsys
):
    workdir = tmp_path / "w"
    shutil.copytree(tiny_workdir[0], workdir)
    (workdir / wd.RESULTS).unlink()  # nothing trained yet
    (bucket,) = [b["bucket_id"] for b in wd.read_config(workdir)["plan"]]
    claims = fanout.Claims(workdir, fanout.TaskSlot(0, 2))
    _edit(claims.try_claim(bucket, 2), pid=_dead_pid())
    status = sweep_status(workdir)
    assert [b["state"] for b in status["buckets"]] == ["dead"] and status["counts"]["dead"] == 1
    assert " dead " in status_text(status)
    # A fan-out's first seconds: its lock is held, config.json not written yet.
    starting = tmp_path / "starting"
    with wd.locked(starting, shared=True):
        assert cli.main(["status", str(starting)]) == 0
        assert "a sweep is starting" in capsys.readouterr().out
    assert cli.main(["status", str(starting)]) == 2  # nothing runs there: not a sweep workdir
    assert "is not a sweep workdir" in capsys.readouterr().err


def test_one_process_of_a_fan_out_writes_the_report_and_another_if_it_fails(tmp_path):
    (tmp_path / "results.csv").write_text("a\n1\n")
    written = []

    def write(fail=False):
        if fail:
            raise RuntimeError("killed mid-report")
        written.append(1)
        return "report.md"

    with pytest.raises(RuntimeError):
        fanout.once_per_results(tmp_path, "report", lambda: write(fail=True))
    assert fanout.once_per_results(tmp_path, "report", write) == "report.md"
    assert fanout.once_per_results(tmp_path, "report", write) is None  # done for these records
    assert fanout.once_per_results(tmp_path, "report", write, present=lambda: False)
    (tmp_path / "results.csv").write_text("a\n1\n2\n")  # the records changed (a grown sweep)
    assert fanout.once_per_results(tmp_path, "report", write) == "report.md"
    assert len(written) == 3


# -- status --------------------------------------------------------------------------------------


def test_status_of_a_finished_sweep_text_and_json(tiny_workdir, capsys):
    root, results = tiny_workdir
    assert cli.main(["status", str(root)]) == 0
    text = capsys.readouterr().out
    assert "1 bucket: 1 done, 0 running, 0 stale, 0 dead, 0 pending" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert cli.main(["status", str(root), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [b["state"] for b in status["buckets"]] == ["done"]
    assert status["model_steps"] == status["planned_model_steps"] == results["step"].max() * 4
    assert cli.main(["status", str(root.parent / "nowhere")]) == 2
    assert "is not a sweep workdir" in capsys.readouterr().err


# -- the documented cluster scripts --------------------------------------------------------------

FANOUT_PAGE = pathlib.Path(__file__).parents[1] / "docs" / "guides" / "fanout.md"


def _documented_block(mark: str) -> str:
    text = FANOUT_PAGE.read_text()
    match = re.search(rf"<!-- fanout-test: {mark} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"no {mark} block in {FANOUT_PAGE}"
    return match.group(1)


def _parsed(argv: list[str], environ: dict[str, str], monkeypatch):
    """The documented command's arguments and the task slot it resolves to under ``environ``."""
    assert argv[:2] == ["coordjax", "sweep"], argv
    args = cli._parser().parse_args(argv[1:])
    module = cli._load_sweep_module(args.name)
    cli._build_preset(module, args.name, args.preset)  # the preset exists
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
                 "JOB_COMPLETION_INDEX"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return args, cli._task_slot(args)


def test_the_documented_slurm_array_resolves_each_task(monkeypatch):
    script = _documented_block("slurm")
    first, last = map(int, re.search(r"#SBATCH --array=(\d+)-(\d+)", script).groups())
    (line,) = [line for line in script.splitlines() if line.startswith("coordjax sweep")]
    for task in (first, last):
        environ = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
                   "SLURM_ARRAY_TASK_COUNT": str(last - first + 1)}  # fmt: skip
        args, slot = _parsed(shlex.split(line), environ, monkeypatch)
        assert (slot.index, slot.count, slot.source) == (task - first, 8, "SLURM_ARRAY_TASK_ID")
        assert args.workdir and args.stale_after == 900


def test_the_documented_kubernetes_indexed_job_resolves_each_pod(monkeypatch):
    manifest = _documented_block("kubernetes")
    completions = int(re.search(r"completions: (\d+)", manifest).group(1))
    assert "completionMode: Indexed" in manifest
    command = json.loads(re.search(r"command: (\[.*\])", manifest).group(1))  # a flow list
    for pod in (0, completions - 1):
        args, slot = _parsed(command, {"JOB_COMPLETION_INDEX": str(pod)}, monkeypatch)
        assert (slot.index, slot.count) == (pod, completions) and args.workdir


PRUNED_GRIDS = """[
    Grid("a", base={**BASE, "epochs": 4, "split": "uniform"}, axes={"lr": [0.05, 0.01, 0.002]}),
    Grid("a", base={**BASE, "epochs": 4, "split": "uniform", "batch_size": 512},
         axes={"lr": [0.05, 0.01]}),
]"""


@pytest.mark.integration
def test_processes_meet_at_a_rung_and_take_the_single_process_decision(tmp_path):
    sweep_file = tiny_sweep_file(tmp_path, PRUNED_GRIDS, prune="Prune(at=(2,), keep=0.5)")
    straight = run_sweep(sweep_of_file(sweep_file), tmp_path / "straight", preset="t",
                         options=EngineOptions(progress=False))  # fmt: skip
    workers = [_launch(sweep_file, tmp_path / "w", i, 2) for i in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
    assert wd.read_pruning(tmp_path / "w") == wd.read_pruning(tmp_path / "straight")
    assert (straight["status"] == "pruned").any()
    assert_bitwise_equal(pd.read_csv(tmp_path / "w" / "results.csv"), straight)
