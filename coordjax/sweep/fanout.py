"""Fan-out: one sweep trained by independent processes that share one workdir.

A SLURM job array, a Kubernetes Indexed Job or a loop of background jobs starts N processes,
each with a task index ``i`` in ``0..N-1`` (:func:`task_slot`: flags or the scheduler's
environment). The processes never talk to each other; the shared workdir is the only contract:

- **Assignment.** Each process computes the same plan and the same assignment of buckets to
  tasks (:func:`assign`: longest first, by the dry run's cost estimate), takes back the claims its
  own task index held (a requeued task resumes where it was), trains its own buckets, then any
  bucket no live process holds (unclaimed, or claimed by a process known dead).
- **Ownership.** A process trains a bucket only while it holds the bucket's claim
  (:class:`Claims`): a file created atomically (``os.link`` of a complete temporary file, which
  fails if the name exists) naming host, pid, the process's start time and task index, with a
  heartbeat a thread refreshes every ``heartbeat_s`` and the ``stale_after`` its holder promises.
  Taking over a dead claim creates the next *generation* of the claim the same way, so of two
  processes that find a claim dead exactly one wins; the old owner sees the newer generation and
  stops before writing anything more. A process holds ``tasks/<i>.lock`` (flock, released by the
  kernel when it dies) for its life: a second process with the same index is refused, and the
  claims of a task whose lock a new process holds are known dead at once.
- **Who is dead** (:func:`holder_state`). A claim made on this machine (same host name, same pid
  namespace) is dead as soon as its pid no longer runs, or runs a process started at another time
  (the pid was reused): no waiting. A claim from another machine is taken over once its heartbeat
  is older than the ``stale_after`` its holder recorded (whatever the reader's own setting: a reader
  with a short ``--stale-after`` never takes a bucket from a live process that beats slowly); so
  is a process of this machine that still runs but stopped beating (it hangs).
- **Stages.** With successive halving, a claim covers a bucket up to the next rung; the processes
  meet at each rung (whoever is idle waits, polling) and every one of them replays the same
  recorded decision (:mod:`coordjax.sweep.pruning`).

Layout (inside the workdir)::

    claims/<bucket_id>/<stage>.<generation>.json   who trains the bucket to epoch <stage>
    claims/<bucket_id>/<stage>.done                 that stage is trained and recorded
    tasks/<index>.lock                              held by the process running task <index>
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pathlib
import socket
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from coordjax.sweep.workdir import WorkdirError, atomic_write_text

logger = logging.getLogger("coordjax.sweep")

CLAIMS = "claims"
TASKS = "tasks"
DEFAULT_STALE_AFTER_S = 600.0
"""A claim whose heartbeat is older than this (seconds) may be taken over: ten minutes, far
beyond the heartbeat's period (a thread refreshes it every ``heartbeat_s``, even mid-chunk)."""

# Where schedulers put the task index (and count), in the order they are read.
ENV_INDEX = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


class FanOutError(ValueError):
    """A task index or count that cannot be used (named, with what is allowed)."""


@dataclasses.dataclass(frozen=True)
class TaskSlot:
    """This process's share of a fanned-out sweep: task ``index`` of ``count``.

    ``source`` says where they came from (``"--task-index"``, ``"SLURM_ARRAY_TASK_ID"``, ...).
    """

    index: int
    count: int
    source: str = "--task-index"

    def __post_init__(self):
        for name, value in (("task_count", self.count), ("task_index", self.index)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise FanOutError(f"{name} must be an int; got {value!r}")
        if self.count < 1:
            raise FanOutError(f"task_count must be >= 1; got {self.count}")
        if not 0 <= self.index < self.count:
            raise FanOutError(
                f"task_index must be in 0..{self.count - 1} (task_count {self.count}); "
                f"got {self.index}"
            )


def _env_int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise FanOutError(f"{name} must be an integer; got {environ[name]!r}") from None


def _is_count(count) -> bool:
    return isinstance(count, int) and not isinstance(count, bool) and count >= 1


def task_slot(
    index: int | None = None, count: int | None = None, environ: Mapping[str, str] | None = None
) -> TaskSlot | None:
    """This process's task: from ``index``/``count`` (the ``--task-index``/``--task-count``
    flags), else from the scheduler's environment, else None (a single process).

    - SLURM job arrays: ``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (arrays may start
      at 1), of ``SLURM_ARRAY_TASK_COUNT``;
    - Kubernetes Indexed Jobs: ``JOB_COMPLETION_INDEX``, of ``count`` (Kubernetes does not export
      the job's completions: pass ``--task-count``).

    Raises:
      FanOutError: an index without a count, a count without an index, an index >= count
        (naming the variable or flag it came from).
    """
    environ = os.environ if environ is None else environ
    if index is not None:
        if count is None:
            raise FanOutError("--task-index needs --task-count (the number of tasks)")
        return TaskSlot(index, count, "--task-index")
    if "SLURM_ARRAY_TASK_ID" in environ:
        task = _env_int(environ, "SLURM_ARRAY_TASK_ID")
        first = 0
        if "SLURM_ARRAY_TASK_MIN" in environ:
            first = _env_int(environ, "SLURM_ARRAY_TASK_MIN")
        if count is None:
            if "SLURM_ARRAY_TASK_COUNT" not in environ:
                raise FanOutError(
                    "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; pass "
                    "--task-count"
                )
            count_from = "SLURM_ARRAY_TASK_COUNT"
            count = _env_int(environ, count_from)
        else:
            count_from = "--task-count"
        if count_from == "SLURM_ARRAY_TASK_COUNT" and count < 1:
            raise FanOutError(f"SLURM_ARRAY_TASK_COUNT must be >= 1; got {count}")
        if _is_count(count) and not 0 <= task - first < count:
            offset = f" minus SLURM_ARRAY_TASK_MIN={first}" if first else ""
            raise FanOutError(
                f"SLURM_ARRAY_TASK_ID={task}{offset} is task {task - first}, outside "
                f"0..{count - 1} ({count_from}={count}); the array's ids must run from "
                "SLURM_ARRAY_TASK_MIN over the task count"
            )
        return TaskSlot(task - first, count, "SLURM_ARRAY_TASK_ID")
    if "JOB_COMPLETION_INDEX" in environ:
        if count is None:
            raise FanOutError(
                "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but the task count is "
                "not known; pass --task-count (the Job's completions)"
            )
        index = _env_int(environ, "JOB_COMPLETION_INDEX")
        if _is_count(count) and not 0 <= index < count:
            raise FanOutError(
                f"JOB_COMPLETION_INDEX={index} is outside 0..{count - 1} (--task-count {count}); "
                "pass the Job's completions as --task-count"
            )
        return TaskSlot(index, count, "JOB_COMPLETION_INDEX")
    if count is not None:
        raise FanOutError(
            "--task-count needs --task-index (or SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX in "
            "the environment)"
        )
    return None


def assign(costs: Sequence[float], count: int) -> list[int]:
    """Each bucket's task: longest first to the least-loaded task (ties: the lower index).

    Deterministic in ``costs`` alone, so every process computes the same assignment.

    >>> assign([5.0, 1.0, 4.0, 2.0], 2)
    [0, 0, 1, 1]
    """
    load = [0.0] * count
    owner = [0] * len(costs)
    for position in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        task = min(range(count), key=lambda t: (load[t], t))
        owner[position] = task
        load[task] += costs[position]
    return owner


def work_order(owners: Sequence[int], index: int) -> list[int]:
    """The bucket positions in the order task ``index`` tries them: its own, then the others'
    starting from the next task's (so idle tasks spread over different buckets).

    >>> work_order([0, 1, 1, 0, 2], 1)
    [1, 2, 4, 0, 3]
    """
    count = max(owners, default=0) + 1
    rank = {t: (t - index) % max(count, 1) for t in range(count)}
    return sorted(range(len(owners)), key=lambda i: (rank[owners[i]], i))


# -- the task lock --------------------------------------------------------------------------------


@contextlib.contextmanager
def task_lock(workdir: pathlib.Path, slot: TaskSlot):
    """Holds ``tasks/<index>.lock`` for the process's life; refuses at once if another live
    process holds it (the same index started twice). The kernel releases it when we die."""
    directory = pathlib.Path(workdir) / TASKS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{slot.index}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkdirError(
                f"task index {slot.index} is already running on workdir {workdir} ({holder}); "
                "give each process its own --task-index"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- who is alive --------------------------------------------------------------------------------

HOLDER_STATES = ("alive", "stale", "dead")


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def process_start(pid: int) -> tuple[str, int] | None:
    """``(state, start)`` of process ``pid`` from ``/proc/<pid>/stat`` (Linux): its state letter
    and its start time in clock ticks since boot; None where it does not exist or there is no
    ``/proc``."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after its last ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def this_machine() -> dict[str, Any]:
    """What a claim records to say where its process runs: host name, the pid namespace (two
    containers on one host share a name but not their pids) and the boot (None where unknown)."""
    namespace = None
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
    return {
        "host": socket.gethostname(),
        "pid_namespace": namespace,
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
    }


def _pid_runs(pid: int, start: int | None) -> bool:
    """Whether ``pid`` runs on this machine and, where ``start`` is known, is the process that
    started then (not a later one that reuses the pid)."""
    found = process_start(pid)
    if found is not None:
        state, started = found
        return state not in ("Z", "X") and (start is None or started == start)
    try:  # no /proc entry we may read: signal 0 asks whether the pid exists, nothing more
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_state(
    payload: dict[str, Any] | None,
    now: float | None = None,
    *,
    default_stale_after: float = DEFAULT_STALE_AFTER_S,
    machine: dict[str, Any] | None = None,
) -> str:
    """Whether a claim's holder is ``"alive"``, ``"dead"`` (a claim made on this machine whose
    process no longer runs, or an unreadable claim) or ``"stale"`` (its heartbeat is older than
    the ``stale_after`` its holder recorded: a process on another machine died, or one hangs).

    ``default_stale_after`` serves claims that record no ``stale_after`` (older versions).
    """
    if payload is None:
        return "dead"
    machine = this_machine() if machine is None else machine
    pid = payload.get("pid")
    if payload.get("host") == machine["host"] and isinstance(pid, int):
        same_space = payload.get("pid_namespace") == machine["pid_namespace"]
        if same_space and payload.get("boot_id") and machine["boot_id"]:
            if payload["boot_id"] != machine["boot_id"]:
                return "dead"  # the machine rebooted since
        if same_space and not _pid_runs(pid, payload.get("process_start")):
            return "dead"
    # A live process on this machine is judged by its heartbeat too (it may hang).
    now = time.time() if now is None else now
    stale_after = float(payload.get("stale_after") or default_stale_after)
    return "stale" if now - float(payload.get("heartbeat", 0.0)) > stale_after else "alive"


# -- claims ---------------------------------------------------------------------------------------


class ClaimLost(RuntimeError):
    """Another process took this bucket over (our heartbeat had gone stale)."""


def _write_new(path: pathlib.Path, payload: dict[str, Any]) -> bool:
    """Creates ``path`` with ``payload`` atomically and only if it does not exist (a complete
    temporary file hard-linked into place); False if it exists."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(f.name, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(f.name)


def generations(directory: pathlib.Path, stage: int) -> dict[int, pathlib.Path]:
    """The claim files of a bucket's stage, by generation."""
    found = {}
    for entry in directory.glob(f"{stage}.*.json"):
        generation = entry.name[len(f"{stage}.") : -len(".json")]
        if generation.isdigit():
            found[int(generation)] = entry
    return found


@dataclasses.dataclass
class Claim:
    """A held claim on one bucket's stage; ``lost`` turns true if a newer generation appears."""

    path: pathlib.Path
    stage: int
    generation: int
    payload: dict[str, Any]
    lost: bool = False

    def newer_exists(self) -> bool:
        return max(generations(self.path.parent, self.stage), default=-1) > self.generation

    def beat(self) -> None:
        """Refreshes the heartbeat, unless the claim was taken over (then ``lost``)."""
        if self.lost or self.newer_exists():
            self.lost = True
            return
        self.payload["heartbeat"] = time.time()
        with contextlib.suppress(OSError):  # a missed beat only ages the claim
            atomic_write_text(self.path, json.dumps(self.payload))

    def check(self) -> None:
        """Raises :class:`ClaimLost` if another process took the bucket over."""
        if self.lost or self.newer_exists():
            self.lost = True
            raise ClaimLost(
                f"bucket {self.path.parent.name}: another process took it over (it found this "
                "process's claim dead or its heartbeat stale); leaving it to that process"
            )


@dataclasses.dataclass
class Claims:
    """The claims of one workdir, as task ``slot`` sees them.

    Args:
      workdir: the sweep's workdir.
      slot: this process's task.
      stale_after: what this process's claims promise: seconds without a heartbeat after which
        another machine's process may take them over (recorded in each claim; a claim is judged
        by its holder's value). Also the limit for claims that record none (older versions).
      heartbeat_s: seconds between heartbeats (default: a tenth of ``stale_after``, at most 30).
    """

    workdir: pathlib.Path
    slot: TaskSlot
    stale_after: float = DEFAULT_STALE_AFTER_S
    heartbeat_s: float | None = None

    def __post_init__(self):
        self.workdir = pathlib.Path(self.workdir)
        if not self.stale_after > 0:
            raise FanOutError(f"stale_after must be > 0 seconds; got {self.stale_after!r}")
        if self.heartbeat_s is None:
            self.heartbeat_s = min(30.0, self.stale_after / 10)
        self._machine = this_machine()
        self._start = process_start(os.getpid())

    def _dir(self, bucket_id: str) -> pathlib.Path:
        return self.workdir / CLAIMS / bucket_id

    def done(self, bucket_id: str, stage: int) -> bool:
        return (self._dir(bucket_id) / f"{stage}.done").exists()

    def mark_done(self, claim: Claim) -> None:
        """Records the stage trained (after its results and checkpoint), and drops the claim."""
        claim.check()
        done = {**claim.payload, "done": time.time()}
        _write_new(claim.path.parent / f"{claim.stage}.done", done)
        with contextlib.suppress(FileNotFoundError):
            claim.path.unlink()

    def holder(self, bucket_id: str, stage: int) -> tuple[int, dict[str, Any] | None]:
        """The newest generation of the stage's claim and its payload (``(-1, None)``: none)."""
        found = generations(self._dir(bucket_id), stage)
        if not found:
            return -1, None
        newest = max(found)
        try:
            return newest, json.loads(found[newest].read_text())
        except (OSError, json.JSONDecodeError):  # atomic writes: unreadable is damage
            return newest, None

    def is_stale(self, payload: dict[str, Any] | None, now: float | None = None) -> bool:
        """Whether a claim may be taken over: its holder is dead or stale (:func:`holder_state`:
        judged by the holder's recorded ``stale_after``, not ours), or it is this task's own (we
        hold the task's lock, so its previous holder is dead)."""
        return self.why_free(payload, now) is not None

    def why_free(self, payload: dict[str, Any] | None, now: float | None = None) -> str | None:
        """Why a claim may be taken over (a phrase for the log), or None while its holder lives."""
        if payload is None:
            return "its claim is unreadable"
        if payload.get("task_index") == self.slot.index and payload.get("task_count") == (
            self.slot.count
        ):
            return "it is this task's own"
        now = time.time() if now is None else now
        state = holder_state(payload, now, default_stale_after=self.stale_after,
                             machine=self._machine)  # fmt: skip
        if state == "dead":
            return "its process is gone"
        if state == "stale":
            age = now - float(payload.get("heartbeat", 0.0))
            limit = float(payload.get("stale_after") or self.stale_after)
            return f"heartbeat {age:.0f} s old, past its {limit:g} s"
        return None

    def own_claims(self, bucket_ids: Sequence[str], stages: Sequence[int]) -> list[int]:
        """The bucket positions whose newest claim (of a stage not done) names this task index:
        a requeued task takes them back first."""
        mine = []
        for position, (bucket_id, stage) in enumerate(zip(bucket_ids, stages, strict=True)):
            if self.done(bucket_id, stage):
                continue
            _, payload = self.holder(bucket_id, stage)
            held_by = None if payload is None else (payload.get("task_index"),
                                                    payload.get("task_count"))  # fmt: skip
            if held_by == (self.slot.index, self.slot.count):
                mine.append(position)
        return mine

    def try_claim(self, bucket_id: str, stage: int) -> Claim | None:
        """The stage's claim if this process gets it; None if it is done or a live process
        holds it (or won the race for it)."""
        if self.done(bucket_id, stage):
            return None
        directory = self._dir(bucket_id)
        directory.mkdir(parents=True, exist_ok=True)
        generation, payload = self.holder(bucket_id, stage)
        now = time.time()
        why = self.why_free(payload, now) if generation >= 0 else None
        if generation >= 0 and why is None:
            return None
        mine = {
            "bucket_id": bucket_id,
            "stage": stage,
            "task_index": self.slot.index,
            "task_count": self.slot.count,
            **self._machine,
            "pid": os.getpid(),
            "process_start": None if self._start is None else self._start[1],
            "heartbeat_s": self.heartbeat_s,
            "stale_after": self.stale_after,
            "claimed": now,
            "heartbeat": now,
        }
        path = directory / f"{stage}.{generation + 1}.json"
        if not _write_new(path, mine):
            return None
        if generation >= 0 and payload is not None:
            logger.warning(
                "bucket %s: took over from task %s (host %s, pid %s: %s)",
                bucket_id, payload.get("task_index"), payload.get("host"), payload.get("pid"), why,
            )  # fmt: skip
        if self.done(bucket_id, stage):  # finished while we looked: nothing to do
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return Claim(path, stage, generation + 1, mine)

    @contextlib.contextmanager
    def heartbeat(self, claim: Claim):
        """Refreshes ``claim``'s heartbeat from a thread while the body runs; on an error the
        claim is released at once (another process need not wait for it to go stale)."""
        stop = threading.Event()

        def beat():
            while not stop.wait(self.heartbeat_s):
                claim.beat()

        thread = threading.Thread(target=beat, name=f"heartbeat-{claim.path.parent.name}")
        thread.daemon = True
        thread.start()
        failed = True
        try:
            yield claim
            failed = False
        finally:
            stop.set()
            thread.join()  # before the release: a beat in flight would write the claim back
            if failed and not claim.lost:
                with contextlib.suppress(OSError):
                    claim.path.unlink()


def run_stage(
    claims: Claims,
    bucket_ids: Sequence[str],
    stages: Sequence[int],
    order: Sequence[int],
    train,
    *,
    poll_s: float | None = None,
    sleep=time.sleep,
) -> int:
    """Trains every bucket's stage that no live process holds, until all are done.

    Args:
      claims: this process's view of the workdir's claims.
      bucket_ids, stages: per bucket, its id and the epoch this stage trains it to.
      order: the bucket positions in the order to try them (:func:`work_order`).
      train: ``train(position, claim)`` trains the bucket's stage and records it; it calls
        ``claim.check()`` before each write.
      poll_s: seconds between looks while other processes hold the remaining stages.

    Returns:
      How many stages this process trained.
    """
    poll_s = min(5.0, claims.stale_after / 4) if poll_s is None else poll_s
    trained = 0
    waiting_logged = False
    while True:
        # The claims this task index held (a requeued task's) first, then the work order.
        own = claims.own_claims(bucket_ids, stages)
        order_now = [*own, *(i for i in order if i not in own)]
        pending = [i for i in order_now if not claims.done(bucket_ids[i], stages[i])]
        if not pending:
            return trained
        progressed = False
        for position in pending:
            claim = claims.try_claim(bucket_ids[position], stages[position])
            if claim is None:
                continue
            try:
                with claims.heartbeat(claim):
                    train(position, claim)
                claims.mark_done(claim)
            except ClaimLost as err:
                logger.warning("%s", err)
                continue
            trained += 1
            progressed = True
        if not progressed:
            if not waiting_logged:
                logger.info(
                    "task %d: waiting for %d bucket(s) held by other processes",
                    claims.slot.index, len(pending),
                )  # fmt: skip
                waiting_logged = True
            sleep(poll_s)


# -- once per sweep -------------------------------------------------------------------------------

ONCE_LOCK = "once.lock"


def _records_state(workdir: pathlib.Path, name: str) -> str:
    """What ``name``'s output depends on: the results and config as they are now."""
    parts = [name]
    for record in ("config.json", "results.csv", "pruning.json"):
        with contextlib.suppress(OSError):
            stat = (workdir / record).stat()
            parts.append(f"{record}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def once_per_results(workdir: str | pathlib.Path, name: str, write, *, present=None):
    """Runs ``write()`` in one process of a finished fan-out and returns its value (None in the
    others).

    The processes finish together (each waits until every bucket is done): the first to get
    ``claims/once.lock`` runs ``write``; the others wait for it, then see that it ran for the
    records as they are now (``claims/<name>.written``) and return None. If the writer dies or
    ``write`` raises, the next one runs it; so whichever tasks survive, one writes.

    Args:
      workdir: the sweep's workdir.
      name: what is written (``"report"``); names the marker.
      write: a callable; raises to leave the marker unwritten.
      present: a callable saying whether the output still exists (default: always): a marker
        whose output was removed since does not count.
    """
    directory = pathlib.Path(workdir) / CLAIMS
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f"{name}.written"
    with open(directory / ONCE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel if the writer dies
        try:
            state = _records_state(pathlib.Path(workdir), name)
            done = marker.exists() and marker.read_text() == state
            if done and (present is None or present()):
                return None
            value = write()
            atomic_write_text(marker, state)
            return value
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
