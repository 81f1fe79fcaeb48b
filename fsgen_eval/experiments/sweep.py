"""Sweeps: a grid of lm-eval runs of the ``fsgen`` model, one folder per cell, resumable.

A cell is one (small, large) pair of a family (large has more parameters) × method (with its parameters) ×
router (with its threshold and parameters) × task; the names and parameters are checked against the
registries (:mod:`fsgen_eval.core.registry`) before anything runs. Each runs ``python -m fsgen_eval.cli run --model fsgen ...`` (lm-eval) with ``--output_path`` a temporary
folder that is renamed to the cell's folder once lm-eval exits 0 and a ``results_*.json`` exists, so a
killed sweep leaves no half-finished cell behind and a rerun starts from the first unfinished cell. lm-eval dies
with the sweep (a supervisor with a parent-death signal kills its process group), and each cell holds a lock
while it runs, so a second sweep on the same folder refuses that cell instead of running it again.
The command runner is injectable (tests use a fake one; a cluster could submit jobs). ``jobs`` runs that
many cells at once (one per CPU core, or one per GPU with ``devices``: each running cell gets a free device).
"""

from __future__ import annotations

import fcntl
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsgen_eval.analysis.params import ParamCount
from fsgen_eval.core import registry
from fsgen_eval.core.runs import results_files

Params = tuple[tuple[str, str], ...]  # (name, value as written) pairs, in the order given
Runner = Callable[[list[str], Path], int]  # (argv, cell's temporary output folder) -> exit code


@dataclass(frozen=True)
class Cell:
    small: str
    large: str
    method: str
    router: str
    threshold: float | None
    task: str
    method_params: Params = ()
    router_params: Params = ()  # the threshold aside

    @property
    def relpath(self) -> Path:
        """``<small>__<large>/<method>[+k=v...]-<router>[+k=v...][-<threshold>]/<task>``, safe as a path."""
        conf = (f"{self.method}{_kv(self.method_params)}-{self.router}{_kv(self.router_params)}"
                + ("" if self.threshold is None else f"-{self.threshold:g}"))
        return Path(_safe(f"{_label(self.small)}__{_label(self.large)}"), _safe(conf), _safe(self.task))

    def model_args(self, trace_arg: str = "trace=true", extra: str = "") -> str:
        """The cell's ``--model_args``: pair, method, router, threshold, parameters, then ``trace_arg`` and
        ``extra``."""
        args = [f"small={self.small}", f"large={self.large}", f"method={self.method}", f"router={self.router}"]
        if self.threshold is not None:
            args.append(f"threshold={self.threshold:g}")
        args += [f"{k}={v}" for k, v in (*self.method_params, *self.router_params)]
        args += [a for a in (trace_arg, extra) if a]
        return ",".join(args)

    def command(self, output: Path, limit: int | None = None, trace_arg: str = "trace=true",
                model_args_extra: str = "", lm_eval_args: list[str] | None = None) -> list[str]:
        """The lm-eval command line that runs this cell into ``output``."""
        model_args = self.model_args(trace_arg, model_args_extra)
        cmd = [*lm_eval_command("fsgen"), "--model", "fsgen", "--model_args", model_args,
               "--tasks", self.task, "--output_path", str(output)]
        if limit is not None:
            cmd += ["--limit", str(limit)]
        from fsgen_eval.lm_eval.run import batch_size_flag  # lm-eval's record of the batch size (issue 25)

        return cmd + batch_size_flag(model_args, lm_eval_args) + list(lm_eval_args or [])


def lm_eval_command(model_class: str) -> list[str]:
    """The command that runs lm-eval for ``model_class``: ``fsgen-eval run`` for fsgen (it registers the model,
    and puts results and traces into ``--output_path``/<pair>), lm-eval itself for its own models."""
    if model_class == "fsgen":
        return [sys.executable, "-m", "fsgen_eval.cli", "run"]
    return [sys.executable, "-m", "lm_eval"]


def _label(model: str) -> str:
    """A local model folder is named by its last component (as lm-eval's folder for the pair is)."""
    return Path(model).name if Path(model).is_absolute() else model


def _safe(name: str) -> str:
    """lm-eval's sanitizing of names for paths (separators and odd characters -> ``__``)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _kv(params: Params) -> str:
    return "".join(f"+{k}={v}" for k, v in params)


def _split_spec(kind: str, spec: str) -> tuple[str, Params]:
    """``"name:k=v:k2=v2"`` -> (name, (("k", "v"), ("k2", "v2")))."""
    name, *pairs = spec.split(":")
    params = []
    for kv in pairs:
        k, eq, v = kv.partition("=")
        if not (k and eq and v):
            raise ValueError(f"{kind} {spec!r}: write parameters as {name}:key=value, got {kv!r}")
        params.append((k, v))
    return name, tuple(params)


def parse_method(spec: str) -> tuple[str, Params]:
    """``"oracle"`` -> (oracle, ()); ``"contrastive:alpha=0.2:beta=1"`` -> the method and its parameters,
    checked against the method's registry entry."""
    name, params = _split_spec("method", spec)
    registry.check_method_params(name, dict(params))
    return name, params


def parse_router(spec: str) -> tuple[str, float | None, Params]:
    """``"always"`` -> (always, None, ()); ``"entropy@1.5"`` -> (entropy, 1.5, ()); ``"name:k=v"`` also sets
    other parameters. Checked against the router's registry entry (a threshold router needs a threshold)."""
    head, params = _split_spec("router", spec)
    name, _, thr = head.partition("@")
    rt = registry.get_router(name)
    given = dict(params)
    if thr:
        try:
            given["threshold"] = float(thr)
        except ValueError:
            raise ValueError(f"router threshold is not a number: {spec!r}") from None
    if "threshold" in rt.defaults and rt.defaults["threshold"] is registry.REQUIRED and "threshold" not in given:
        raise ValueError(f"router {name!r} needs a threshold: write {name}@<threshold>")
    checked = registry.check_router_params(name, given)
    threshold = checked.get("threshold")
    return name, None if threshold is None else float(threshold), tuple((k, v) for k, v in params if k != "threshold")


def pairs(models: list[ParamCount]) -> list[tuple[ParamCount, ParamCount]]:
    """Every (large, small) with the large model strictly bigger, small to large."""
    ms = sorted(models, key=lambda m: m.total)
    return [(large, small) for i, small in enumerate(ms) for large in ms[i + 1:] if large.total > small.total]


def build_grid(models: list[ParamCount], methods: list[str], routers: list[str], tasks: list[str]) -> list[Cell]:
    """pairs × methods × routers × tasks, in that nesting order."""
    if len(models) < 2:
        raise ValueError(f"a sweep needs at least two models of a family, got {len(models)}")
    parsed_methods = [parse_method(m) for m in methods]
    parsed = [parse_router(r) for r in routers]
    return [Cell(small.hub_id, large.hub_id, m, r, t, task, mp, rp) for large, small in pairs(models)
            for m, mp in parsed_methods for r, t, rp in parsed for task in tasks]


def is_done(folder: Path) -> bool:
    """A cell folder is finished when it holds a ``results_*.json``."""
    return folder.is_dir() and bool(results_files(folder))


# The supervisor between the sweep and lm-eval: it asks the kernel for SIGTERM when the sweep dies (even by
# SIGKILL: PR_SET_PDEATHSIG), starts lm-eval in a process group of its own, and on SIGTERM or SIGINT kills
# that whole group (lm-eval and whatever it started) before it exits. argv: sweep's pid, then lm-eval's argv.
_SUPERVISOR = r"""
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the sweep died before the line above
    sys.exit(137)
child = subprocess.Popen(sys.argv[2:], start_new_session=True)
def stop(signum, frame):  # (no child.wait() here: the interrupted wait holds its lock)
    os.killpg(child.pid, signal.SIGKILL)
    os._exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
sys.exit(child.wait())
"""

_running: set[subprocess.Popen] = set()  # supervisors of running cells (stopped when the sweep is interrupted)
_running_lock = threading.Lock()


def subprocess_runner(argv: list[str], output: Path, echo: Callable[[str], None] | None = None) -> int:
    """Run lm-eval, its output going to ``<output>/lm_eval.log``; it (with its process group) dies with the
    sweep, even when the sweep is killed with SIGKILL. With ``echo``, every line of that output (a progress
    bar's redraws, split at carriage returns, included) is also handed to ``echo`` as it arrives."""
    output.mkdir(parents=True, exist_ok=True)
    with (output / "lm_eval.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(os.getpid()), *argv],
                                stdout=subprocess.PIPE if echo else log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with _running_lock:
            _running.add(proc)
        try:
            if echo:
                _copy_output(proc.stdout, log, echo)
            return proc.wait()
        finally:
            with _running_lock:
                _running.discard(proc)


def _copy_output(stream: Any, log: Any, echo: Callable[[str], None]) -> None:
    r"""Copy ``stream`` into ``log`` as it comes, and each finished line (``\n`` or ``\r``) to ``echo``."""
    pending = b""
    while chunk := stream.read1(65536):
        log.write(chunk)
        log.flush()
        *lines, pending = re.split(rb"[\r\n]", pending + chunk)
        for line in lines:
            if line.strip():
                echo(line.decode(errors="replace"))
    if pending.strip():
        echo(pending.decode(errors="replace"))


def stop_running_cells() -> None:
    """SIGTERM every running cell's supervisor (which kills its lm-eval) and wait for them."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


class CellLocked(RuntimeError):
    """Another sweep holds this cell's lock."""


@contextmanager
def cell_lock(final: Path) -> Iterator[None]:
    """Hold ``.<cell>.lock`` beside the cell's folder (``fcntl.flock``, released by the kernel even when the
    holder is killed); raises :class:`CellLocked` at once, naming the holder, if another sweep holds it."""
    path = final.with_name(f".{final.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise CellLocked(f"another sweep (pid {holder}) is running this cell (lock {path}); not started here")
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield  # the lock file stays: removing it would let two sweeps lock two different files


@dataclass
class SweepOutcome:
    ran: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)


DONE_ELSEWHERE = "finished by another sweep meanwhile"


def run_cell(cell: Cell, out_dir: Path, runner: Runner, unfinished_only: bool = False, **command_kw) -> str | None:
    """Run one cell into a temporary folder and rename it on success; returns the failure, or ``None``.

    The cell's lock is held throughout, so two sweeps on one folder never run one cell twice: the second
    gets a one-line refusal. With ``unfinished_only`` (the sweep, which chose unfinished cells), a cell found
    finished once the lock is held was finished by another sweep meanwhile: :data:`DONE_ELSEWHERE`, not rerun.
    """
    final = out_dir / cell.relpath
    try:
        with cell_lock(final):
            if unfinished_only and is_done(final):
                return DONE_ELSEWHERE
            return _run_then_rename(final, lambda tmp: cell.command(tmp, **command_kw), runner, "lm-eval")
    except CellLocked as err:
        return str(err)


def _run_then_rename(final: Path, command: Callable[[Path], list[str]], runner: Runner, what: str) -> str | None:
    """Run ``command(tmp)`` into ``final``'s temporary folder and rename it to ``final`` once it wrote a
    results file; returns the failure (``what`` names the run), or ``None``. The caller holds the lock."""
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():  # left by a killed sweep (a running one would hold the lock)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rc = runner(command(tmp), tmp)
    if rc != 0:
        return f"{what} exited {rc} (see {tmp / 'lm_eval.log'})"
    if not is_done(tmp):
        return f"{what} exited 0 but wrote no results_*.json under {tmp}"
    if final.exists():  # a folder without results (e.g. emptied by hand) is replaced
        shutil.rmtree(final)
    tmp.rename(final)
    return None


def include_path(lm_eval_args: list[str] | None) -> str | None:
    """The ``--include_path`` among lm-eval's arguments (either spelling), or None."""
    args = list(lm_eval_args or [])
    include = args[args.index("--include_path") + 1] if "--include_path" in args[:-1] else None
    return next((a.partition("=")[2] for a in args if a.startswith("--include_path=")), include)


def check_tasks(tasks: list[str], lm_eval_args: list[str] | None = None) -> None:
    """Refuse, in one line naming them, task names lm-eval does not know (its ``TaskManager`` index, with the
    ``--include_path`` of ``lm_eval_args`` if any), before any cell starts; a path to a task YAML passes."""
    from lm_eval.tasks import TaskManager

    include = include_path(lm_eval_args)
    unknown = [t for t in tasks if not Path(t).exists()]
    if not unknown:
        return
    known = set(TaskManager(verbosity="ERROR", include_path=include).all_tasks)
    unknown = [t for t in unknown if t not in known]
    if unknown:
        raise ValueError(f"--tasks: lm-eval knows no task {', '.join(map(repr, unknown))} "
                         f"({'with --include_path ' + include if include else 'its task index'}; "
                         "`lm_eval ls tasks` lists them)")


def check_model_args_extra(model_args_extra: str) -> None:
    """Refuse a ``--model-args-extra`` key ``--model fsgen`` does not take, in one line, before any cell starts
    (lm-eval would otherwise fail cell by cell)."""
    from fsgen_eval.lm_eval.model import FSGenLM

    valid = FSGenLM.model_arg_names()
    keys = [p.partition("=")[0].strip() for p in model_args_extra.split(",") if p.strip()]
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise ValueError(f"--model-args-extra: --model fsgen takes no key {', '.join(map(repr, unknown))} "
                         f"(valid keys: {', '.join(valid)})")


def check_jobs(jobs: int, devices: list[str] | None, model_args_extra: str = "") -> None:
    """Refuse, naming the problem, a job count below 1, a device list that is not one per job, or a device
    given both ways."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if devices is not None and len(devices) != jobs:
        raise ValueError(f"--devices names {len(devices)} devices but --jobs is {jobs}: give one per job")
    if devices and "device=" in model_args_extra:
        raise ValueError("give the device either in --model-args-extra or with --devices, not both")


def run_sweep(cells: list[Cell], out_dir: Path, runner: Runner = subprocess_runner, progress: bool = True,
              jobs: int = 1, devices: list[str] | None = None, replay: bool = False, system2_model: str = "fsgen",
              vllm_args: dict[str, str] | None = None, draft_lengths: list[int] | None = None,
              replay_args: tuple[str, ...] = (), in_process: bool = False, **command_kw) -> SweepOutcome:
    """Run every unfinished cell (a cell with a ``results_*.json`` is skipped), ``jobs`` at a time, with a
    progress bar. With ``devices`` (one per job), a running cell's model_args get ``device=<its device>``.

    ``replay``: oracle/``always`` cells are made by one System 2 run per (large, task) with lm-eval's
    ``system2_model`` class and one ``fsgen-eval replay`` of their small models (:func:`run_replay_group`);
    other cells run lockstep as before; ``replay_args`` (e.g. ``--scoring vllm``) go to every replay.

    ``in_process``: the (lockstep) cells that share a pair and a task run in one process with the models loaded
    once (:mod:`fsgen_eval.experiments.cells`), each with its own files, lock and resume as a cell alone."""
    from tqdm import tqdm

    from fsgen_eval.experiments.cells import CellGroup, cell_groups, run_group

    check_jobs(jobs, devices, command_kw.get("model_args_extra", ""))
    if replay:
        replay_model_args(command_kw.get("model_args_extra", ""))  # refused before any cell starts
    outcome = SweepOutcome()
    todo = [c for c in cells if not is_done(out_dir / c.relpath)]
    outcome.skipped = [c for c in cells if c not in todo]
    free: queue.Queue[str | None] = queue.Queue()
    for dev in devices or [None] * jobs:
        free.put(dev)
    lock = threading.Lock()
    bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc="sweep", unit="cell", disable=not progress)

    stop = threading.Event()  # set by a runner's exception: no further cell starts

    def one(work: Cell | tuple[System2Job | CellGroup, list[Cell]]) -> None:
        if stop.is_set():
            return
        dev = free.get()  # a free slot always exists: the pool has exactly ``jobs`` workers
        try:
            extra = ",".join(a for a in (command_kw.get("model_args_extra", ""), dev and f"device={dev}") if a)
            kw = {**command_kw, "model_args_extra": extra}
            if isinstance(work, Cell):
                done = [(work, run_cell(work, out_dir, runner, unfinished_only=True, **kw))]
            elif isinstance(work[0], CellGroup):
                done = run_group(*work, out_dir, runner, **kw)
            else:
                done = run_replay_group(*work, out_dir, runner, system2_model, vllm_args, draft_lengths, replay_args,
                                        **kw)
        except BaseException:
            stop.set()
            raise
        finally:
            free.put(dev)
        with lock:
            for cell, err in done:
                if err == DONE_ELSEWHERE:
                    outcome.skipped.append(cell)
                else:
                    (outcome.failed.append((cell, err)) if err else outcome.ran.append(cell))
                bar.set_postfix_str(str(cell.relpath), refresh=False)
                bar.update()

    groups = replay_groups(todo) if replay else {}
    # longest first: a group's cost grows with its large model, which in a family sweep is the large model
    # of more pairs; started last, the biggest group would leave the other jobs idle at the end
    work: list[Cell | tuple[System2Job | CellGroup, list[Cell]]] = sorted(groups.items(), key=lambda g: -len(g[1]))
    lockstep = [c for c in todo if not (replay and replayable(c))]
    together = cell_groups(lockstep) if in_process else {}
    work += sorted(together.items(), key=lambda g: -len(g[1]))
    grouped = {c for cs in together.values() for c in cs}
    work += [c for c in lockstep if c not in grouped]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, w) for w in work]
        try:
            for f in futures:
                f.result()  # re-raise a runner's exception (or Ctrl-C) ...
        except BaseException:
            stop.set()  # ... and start no further cell; running lm-eval processes are stopped
            for f in futures:
                f.cancel()
            stop_running_cells()
            raise
    bar.close()
    outcome.ran.sort(key=cells.index)  # completion order varies with jobs > 1; report in grid order
    return outcome


def describe(cells: list[Cell], out_dir: Path, replay: bool = False, system2_model: str = "fsgen",
             vllm_args: dict[str, str] | None = None, draft_lengths: list[int] | None = None,
             replay_args: tuple[str, ...] = (), **command_kw) -> str:
    """The grid as text (for ``--dry-run``): one line per cell with its state and command; with ``replay``,
    one System 2 run per (large, task) and the replay that makes its cells."""
    lines = [f"{len(cells)} cells"]
    groups = replay_groups(cells) if replay else {}
    s2_kw = {k: v for k, v in command_kw.items() if k in ("limit", "trace_arg", "model_args_extra", "lm_eval_args")}
    for job, members in groups.items():
        s2 = out_dir / job.relpath
        lines.append(f"[{'done' if is_done(s2) else 'todo'}] {job.relpath} (System 2 once for {len(members)} cells)"
                     f"\n    {' '.join(job.command(s2, system2_model, vllm_args=vllm_args, **s2_kw))}")
        todo = [c for c in members if not is_done(out_dir / c.relpath)]
        lines += [f"[{'todo' if c in todo else 'done'}] {c.relpath} (replayed)" for c in members]
        if todo:
            cmd = replay_command(s2, [c.small for c in todo], job.large, out_dir / "_replay",
                                 command_kw.get("model_args_extra", ""), draft_lengths, replay_args)
            lines.append(f"    {' '.join(cmd)}")
    for c in cells:
        if c in [m for ms in groups.values() for m in ms]:
            continue
        state = "done" if is_done(out_dir / c.relpath) else "todo"
        lines.append(f"[{state}] {c.relpath}\n    {' '.join(c.command(out_dir / c.relpath, **command_kw))}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ replay
# Under the oracle with router ``always`` the emitted tokens are the large model's greedy tokens, so System 2
# generates once per (large, task) and every small model of the grid is scored on it teacher-forced
# (``fsgen-eval replay``) instead of decoding the large model again in every cell.
SYSTEM2_MODELS = ("fsgen", "hf", "vllm")
VLLM_ARGS = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization")


def replayable(cell: Cell) -> bool:
    """An oracle/``always`` cell without parameters: its tokens are the large model's greedy tokens and its
    trace is exactly what ``fsgen-eval replay`` writes (s2_* the large model's own statistics). The registry's
    ``large_alone`` + ``always_calls`` promise the first for another method, not the second, so the names are
    the replay's own configuration here, not a guess at what a method does."""
    return (cell.method == "oracle" and cell.router == "always" and cell.threshold is None
            and not cell.method_params and not cell.router_params)


LM_EVAL_FLAGS = ("batch_size", "device")  # model args lm-eval's CLI also passes to every model class


@dataclass(frozen=True)
class System2Job:
    """System 2's own run for one (large, task): ``_system2/<large>/<task>`` beside the cells."""

    large: str
    task: str

    @property
    def relpath(self) -> Path:
        return Path("_system2", _safe(_label(self.large)), _safe(self.task))

    def command(self, output: Path, model_class: str = "fsgen", limit: int | None = None,
                trace_arg: str = "trace=true", model_args_extra: str = "", lm_eval_args: list[str] | None = None,
                vllm_args: dict[str, str] | None = None) -> list[str]:
        """lm-eval for System 2 alone, with ``--log_samples`` (the replay's prompts).

        ``fsgen``: the large model as System 1 with router ``never`` (exact token ids in its traces);
        ``hf`` / ``vllm``: lm-eval's own model classes (the replay re-tokenizes their responses).
        """
        if model_class not in SYSTEM2_MODELS:
            raise ValueError(f"unknown --system2-model {model_class!r} (known: {', '.join(SYSTEM2_MODELS)})")
        if model_class == "fsgen":
            args = [f"small={self.large}", f"large={self.large}", "method=oracle", "router=never", trace_arg]
        else:
            args = [f"pretrained={self.large}"]
        if model_class == "vllm":
            args += [f"{k}={v}" for k, v in (vllm_args or {}).items()]
        extra = [a for a in model_args_extra.split(",") if a]
        # lm-eval hands its own --batch_size/--device to hf's and vllm's classes as keywords too, so in their
        # model_args they would be given twice (a TypeError): there they go on lm-eval's command line instead;
        # for fsgen, --batch_size is added so that lm-eval's own record of the batch size is true
        flags = [] if model_class == "fsgen" else [a for a in extra if a.partition("=")[0].strip() in LM_EVAL_FLAGS]
        from fsgen_eval.lm_eval.run import batch_size_flag

        flag = batch_size_flag(model_args_extra, lm_eval_args) if model_class == "fsgen" else []
        args += [a for a in extra if a not in flags]
        cmd = [*lm_eval_command(model_class), "--model", model_class, "--model_args", ",".join(a for a in args if a),
               "--tasks", self.task, "--output_path", str(output), "--log_samples"]
        for a in flags:
            key, _, value = a.partition("=")
            cmd += [f"--{key.strip()}", value.strip()]
        if limit is not None:
            cmd += ["--limit", str(limit)]
        return cmd + flag + list(lm_eval_args or [])


def replay_model_args(model_args_extra: str) -> dict[str, str]:
    """The cells' ``--model-args-extra`` (``k=v,k2=v2``, split as lm-eval splits ``--model_args``) as the
    replay of oracle/``always`` cells reads it: dtype, device and batch_size become its flags. A method's or
    router's parameter (any name in the registry's :func:`registry.param_names`: threshold, num_draft, ...) is
    refused, as the adapter refuses it for method=oracle, router=always: the replay could not apply it."""
    kv: dict[str, str] = {}
    for piece in filter(None, (a.strip() for a in model_args_extra.split(","))):
        key, eq, value = piece.partition("=")
        if not (key and eq):
            raise ValueError(f"--model-args-extra: write key=value pairs, got {piece!r}")
        kv[key.strip()] = value.strip()
    foreign = [k for k in kv if k in registry.param_names()]
    if foreign:
        raise ValueError(f"--model-args-extra sets {', '.join(foreign)}, a method's or router's parameter that "
                         "oracle/always cells do not take; give it with --methods/--routers name:key=value, or "
                         "pass --no-replay")
    return kv


def replay_command(system2_folder: Path, smalls: list[str], large: str, output: Path, model_args_extra: str = "",
                   draft_lengths: list[int] | None = None, replay_args: tuple[str, ...] = ()) -> list[str]:
    """``fsgen-eval replay`` of every small model on System 2's run, dtype/device/batch size as the cells',
    then ``replay_args`` (the scoring backend: ``--scoring vllm ...``)."""
    kv = replay_model_args(model_args_extra)
    cmd = [sys.executable, "-m", "fsgen_eval.cli", "replay", str(system2_folder), "--small", ",".join(smalls),
           "--large", large, "-o", str(output), "--dtype", kv.get("dtype", "float32"),
           "--device", kv.get("device", "cpu")]
    if str(kv.get("batch_size", "")).isdigit():
        cmd += ["--batch-size", kv["batch_size"]]
    if draft_lengths:
        cmd += ["--draft-lengths", ",".join(map(str, draft_lengths))]
    return cmd + list(replay_args)


def _results_folder(folder: Path) -> Path:
    (results, *rest) = results_files(folder)
    if rest:
        raise ValueError(f"{folder}: more than one results_*.json: remove the stale one")
    return results.parent


def run_system2(job: System2Job, out_dir: Path, runner: Runner, **command_kw) -> str | None:
    """System 2's run into a temporary folder, renamed when it finished; a finished one is reused. The
    caller holds the job's lock (:func:`run_replay_group`)."""
    final = out_dir / job.relpath
    if is_done(final):
        return None
    return _run_then_rename(final, lambda tmp: job.command(tmp, **command_kw), runner, "System 2's lm-eval run")


def run_replay_group(job: System2Job, cells: list[Cell], out_dir: Path, runner: Runner,
                     system2_model: str = "fsgen", vllm_args: dict[str, str] | None = None,
                     draft_lengths: list[int] | None = None, replay_args: tuple[str, ...] = (),
                     **command_kw) -> list[tuple[Cell, str | None]]:
    """System 2 once for ``job``, then one replay of every unfinished cell's small model; each cell's folder
    gets its ``<small>__<large>`` run by a rename (a killed replay leaves only a ``.tmp`` folder).

    Locks as :func:`run_cell`'s: the job's lock (beside ``_system2/<large>/<task>``) for System 2's run and
    the group's replay folder, then each cell's own lock, so a second sweep on the folder (replaying or
    lockstep) never runs a cell twice. A group another sweep holds is refused whole (one line per cell); a
    cell another sweep holds is refused and left out of the replay; a cell found finished once its lock is
    held was finished elsewhere (:data:`DONE_ELSEWHERE`).
    """
    todo = [c for c in cells if not is_done(out_dir / c.relpath)]
    if not todo:
        return []
    out: list[tuple[Cell, str | None]] = []
    with ExitStack() as held:
        try:
            held.enter_context(cell_lock(out_dir / job.relpath))
        except CellLocked as err:
            return [(c, str(err)) for c in todo]
        mine = []
        for c in todo:
            try:
                held.enter_context(cell_lock(out_dir / c.relpath))
            except CellLocked as err:
                out.append((c, str(err)))
                continue
            if is_done(out_dir / c.relpath):
                out.append((c, DONE_ELSEWHERE))
            else:
                mine.append(c)
        if mine:
            out += _replay_locked(job, mine, out_dir, runner, system2_model, vllm_args, draft_lengths, replay_args,
                                  **command_kw)
    return out


def _replay_locked(job: System2Job, todo: list[Cell], out_dir: Path, runner: Runner, system2_model: str,
                   vllm_args: dict[str, str] | None, draft_lengths: list[int] | None,
                   replay_args: tuple[str, ...] = (), **command_kw) -> list[tuple[Cell, str | None]]:
    """:func:`run_replay_group`'s work once every lock is held."""
    from fsgen_eval.lm_eval.args import pair_name

    s2_kw = {k: v for k, v in command_kw.items() if k in ("limit", "trace_arg", "model_args_extra", "lm_eval_args")}
    err = run_system2(job, out_dir, runner, model_class=system2_model, vllm_args=vllm_args, **s2_kw)
    if err:
        return [(c, err) for c in todo]
    tmp = out_dir / "_replay" / f"{job.relpath.parts[1]}__{job.relpath.parts[2]}.tmp"
    if tmp.exists():  # a killed replay's (the job's lock is held)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    argv = replay_command(_results_folder(out_dir / job.relpath), [c.small for c in todo], job.large, tmp,
                          command_kw.get("model_args_extra", ""), draft_lengths, replay_args)
    rc = runner(argv, tmp)
    out: list[tuple[Cell, str | None]] = []
    for c in todo:
        src = tmp / pair_name(c.small, c.large)
        if rc != 0 or not is_done(src):
            out.append((c, f"replay exited {rc} (see {tmp / 'lm_eval.log'})"))
            continue
        final = out_dir / c.relpath
        staging = final.with_name(final.name + ".tmp")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        src.rename(staging / src.name)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        out.append((c, None))
    if all(e is None for _, e in out):
        shutil.rmtree(tmp)
    return out


def replay_groups(cells: list[Cell]) -> dict[System2Job, list[Cell]]:
    """The oracle/``always`` cells grouped by (large, task), in grid order."""
    groups: dict[System2Job, list[Cell]] = {}
    for c in cells:
        if replayable(c):
            groups.setdefault(System2Job(c.large, c.task), []).append(c)
    return groups
