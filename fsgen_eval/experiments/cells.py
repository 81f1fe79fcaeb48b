"""In-process cells: a sweep's cells that share a pair and a task run in ONE process, the models loaded once.

A fresh ``fsgen-eval run`` per cell spends most of a small cell starting Python, importing lm-eval and
torch, building the task index and loading both models. Here one worker process (``python -m
fsgen_eval.experiments.cells SPEC``) runs each cell's own ``fsgen-eval run`` command line in turn, as that
command runs it (:func:`fsgen_eval.lm_eval.run.run_lm_eval`: the run's folder, lm-eval, the summary), inside :meth:`FSGenLM.reusing_weights`, so the
second and later cells of the group run on the weights the first one loaded (:meth:`FSGenLM.for_run`).
Everything else is the per-process run's: the same argv, the same results, samples and trace files in the
same folders, each cell's output in its own ``lm_eval.log``.

Locks and resume are the per-process cells' (:func:`sweep.run_cell`): the sweep holds the group's lock and
every cell's lock while the worker runs (the worker dies with the sweep, through the same supervisor), each
cell runs into its ``.tmp`` folder and is renamed to its final folder as soon as it finished, so a killed group
leaves its finished cells finished and a rerun runs only the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fsgen_eval.experiments import sweep
from fsgen_eval.experiments.sweep import Cell, CellLocked, Runner

OUTCOMES = "outcomes.jsonl"  # one line per finished cell of the group: its final folder and its failure or null


@dataclass(frozen=True)
class CellGroup:
    """The cells of one (small, large, task): ``_cells/<small>__<large>__<task>`` holds the worker's log."""

    small: str
    large: str
    task: str

    @property
    def relpath(self) -> Path:
        return Path("_cells", sweep._safe(f"{sweep._label(self.small)}__{sweep._label(self.large)}__{self.task}"))


def cell_groups(cells: list[Cell]) -> dict[CellGroup, list[Cell]]:
    """``cells`` grouped by (small, large, task), in grid order; groups of one cell are left out (a cell alone
    gains nothing from a worker and runs as before)."""
    groups: dict[CellGroup, list[Cell]] = {}
    for c in cells:
        groups.setdefault(CellGroup(c.small, c.large, c.task), []).append(c)
    return {g: cs for g, cs in groups.items() if len(cs) > 1}


def worker_command(spec: Path) -> list[str]:
    return [sys.executable, "-m", "fsgen_eval.experiments.cells", str(spec)]


def run_group(group: CellGroup, cells: list[Cell], out_dir: Path, runner: Runner,
              **command_kw) -> list[tuple[Cell, str | None]]:
    """Run the group's unfinished cells in one worker process; returns (cell, failure or ``None``) per cell.

    Locks as :func:`sweep.run_replay_group`'s: the group's lock (its worker folder), then each cell's own lock;
    a group another sweep holds is refused whole, a cell another sweep holds is refused and left out, a cell
    found finished once its lock is held was finished elsewhere (:data:`sweep.DONE_ELSEWHERE`)."""
    todo = [c for c in cells if not sweep.is_done(out_dir / c.relpath)]
    out: list[tuple[Cell, str | None]] = []
    with ExitStack() as held:
        try:
            held.enter_context(sweep.cell_lock(out_dir / group.relpath))
        except CellLocked as err:
            return [(c, str(err)) for c in todo]
        mine = []
        for c in todo:
            try:
                held.enter_context(sweep.cell_lock(out_dir / c.relpath))
            except CellLocked as err:
                out.append((c, str(err)))
                continue
            if sweep.is_done(out_dir / c.relpath):
                out.append((c, sweep.DONE_ELSEWHERE))
            else:
                mine.append(c)
        if mine:
            out += _run_locked(group, mine, out_dir, runner, **command_kw)
    return out


def _run_locked(group: CellGroup, cells: list[Cell], out_dir: Path, runner: Runner,
                **command_kw) -> list[tuple[Cell, str | None]]:
    """:func:`run_group`'s work once every lock is held: the spec, the worker, then each cell's outcome."""
    tmp = out_dir / group.relpath.with_name(group.relpath.name + ".tmp")
    if tmp.exists():  # a killed group's worker folder (the group's lock is held)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    finals = [out_dir / c.relpath for c in cells]
    spec = [{"final": str(f), "argv": c.command(_cell_tmp(f), **command_kw)} for c, f in zip(cells, finals)]
    (tmp / "spec.json").write_text(json.dumps(spec, indent=1))
    rc = runner(worker_command(tmp / "spec.json"), tmp)
    outcomes = _read_outcomes(tmp / OUTCOMES)
    result = [(c, outcomes[str(f)] if str(f) in outcomes else
               f"cell group exited {rc} before this cell finished (see {tmp / 'lm_eval.log'})")
              for c, f in zip(cells, finals)]
    if rc == 0 and all(err is None for _, err in result):
        shutil.rmtree(tmp)
    return result


def _cell_tmp(final: Path) -> Path:
    """The cell's temporary folder, as :func:`sweep._run_then_rename` names it."""
    return final.with_name(final.name + ".tmp")


def _read_outcomes(path: Path) -> dict[str, str | None]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["final"]: r["error"] for r in rows}


# ------------------------------------------------------------------------------------------- worker
@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python's prints, logging, tqdm and
    anything below Python) to ``log`` for the block, as a per-process cell's ``lm_eval.log`` gets them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def in_process_runner(argv: list[str], output: Path) -> int:
    """Run one cell's ``python -m fsgen_eval.cli run ...`` argv in this process as ``fsgen-eval run`` runs it,
    its output to ``<output>/lm_eval.log``; returns its exit status as the process would have."""
    from fsgen_eval.lm_eval.run import run_lm_eval

    prefix = sweep.lm_eval_command("fsgen")[1:]
    if argv[1:len(prefix) + 1] != prefix:
        raise ValueError(f"not an fsgen-eval run command line: {argv[:len(prefix) + 1]}")
    output.mkdir(parents=True, exist_ok=True)
    with _output_to(output / "lm_eval.log"):
        try:
            run_lm_eval(argv[len(prefix) + 1:])
            rc = 0
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except Exception:  # noqa: BLE001 -- a cell's failure is its exit status, as in its own process
            traceback.print_exc()
            rc = 1
    return rc


def run_worker(spec_path: Path, runner: Runner | None = None) -> int:
    """The worker: every cell of the spec in turn (``runner``: :func:`in_process_runner`; tests give another),
    each renamed to its final folder as soon as it finished; one outcome line per cell beside the spec.
    Returns 1 if a cell failed."""
    from fsgen_eval.lm_eval.model import FSGenLM

    spec = json.loads(spec_path.read_text())
    failed = 0
    with FSGenLM.reusing_weights(), open(spec_path.with_name(OUTCOMES), "a") as outcomes:
        for i, entry in enumerate(spec, 1):
            final = Path(entry["final"])
            print(f"cell {i}/{len(spec)}: {final}", flush=True)
            err = sweep._run_then_rename(final, lambda tmp, argv=entry["argv"]: _checked_argv(argv, tmp),
                                         runner or in_process_runner, "lm-eval")
            failed += err is not None
            print(f"cell {i}/{len(spec)}: {'done' if err is None else err}", flush=True)
            outcomes.write(json.dumps({"final": str(final), "error": err}) + "\n")
            outcomes.flush()
    return 1 if failed else 0


def _checked_argv(argv: list[str], tmp: Path) -> list[str]:
    """The spec's argv, which names the cell's temporary folder as its ``--output_path``."""
    if argv[argv.index("--output_path") + 1] != str(tmp):
        raise ValueError(f"the cell's --output_path is not its temporary folder {tmp}")
    return argv


if __name__ == "__main__":
    sys.exit(run_worker(Path(sys.argv[1])))
