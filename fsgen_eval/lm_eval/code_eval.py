"""Sandboxed pass@k for code tasks (MBPP): the project's ``fsgen_mbpp`` task scores through it, and so does
lm-eval's unchanged ``mbpp`` offline, where ``evaluate.load("code_eval")`` finds the metric script
:mod:`fsgen_eval.lm_eval.code_eval_metric` that ``fsgen-eval offline-cache`` put in evaluate's module cache
(nothing is patched). Same ``compute`` signature and return value as the hub's ``code_eval``, each program
run with its tests in its own contained process (:mod:`fsgen_eval.lm_eval.sandbox`: own
session, rlimits, empty folder, clean environment, and where the kernel allows pid, mount and network
namespaces, a private read-only root and a fresh uid; its results name the protections that were active).

Running model-written code stays behind the same two gates: lm-eval refuses ``unsafe_code`` tasks without
``--confirm_run_unsafe_code``, and :meth:`CodeEval.compute` refuses to run anything unless
``HF_ALLOW_CODE_EVAL=1`` (as the hub metric does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from math import comb
from typing import Any

from fsgen_eval.lm_eval.sandbox import FALLBACK, Limits, protections, run_contained

MEMORY_ENV = "FSGEN_CODE_EVAL_MEMORY_MB"
DEFAULT_MEMORY_MB = 1024
GATE_ENV = "HF_ALLOW_CODE_EVAL"
log = logging.getLogger(__name__)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: P(at least one of k draws from n samples, c correct, passes)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def allowed() -> bool:
    """Whether generated programs may run in this process: ``HF_ALLOW_CODE_EVAL=1``, as the hub metric asks."""
    return os.environ.get(GATE_ENV) == "1"


def sandbox_layers() -> list[str] | None:
    """For a run's results: the layers each generated program gets here (:func:`protections`, a probe of this
    machine and ``FSGEN_CODE_EVAL_SANDBOX``, the same call :meth:`CodeEval.compute` makes), or ``None`` where no
    program may run (:func:`allowed`). Asked by each run when it writes its info: nothing one run's metric did
    is carried to another's results."""
    return list(protections()) if allowed() else None


def run_program(program: str, timeout: float = 3.0, memory_mb: int | None = None) -> str:
    """Run ``program`` contained (:mod:`fsgen_eval.lm_eval.sandbox`); ``"passed"`` (it reached its last line
    and exited 0), ``"timed out"`` or ``"failed: <last line of its stderr>"``. A harness error for one
    program fails that program only (logged), never the batch."""
    memory_mb = memory_mb or int(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY_MB))
    try:
        outcome = run_contained(program, timeout, Limits(memory_mb=memory_mb, cpu_s=int(timeout) + 1))
    except OSError as err:
        log.error("code_eval: the sandbox could not run a program: %s", err)
        return f"failed: sandbox error: {err}"
    if outcome.timed_out:
        return "timed out"
    if outcome.returncode == 0 and outcome.completed:
        return "passed"
    if outcome.returncode == 0:  # sys.exit(0), exit(), os._exit(0) before the tests' end
        return "failed: ended before the end of its tests (exit status 0)"
    tail = outcome.stderr_tail.strip().splitlines()
    return f"failed: {tail[-1] if tail else f'exit status {outcome.returncode}'}"


class CodeEval:
    """Drop-in for the hub's ``code_eval``: ``compute(predictions, references, k)``."""

    def compute(
        self,
        predictions: Sequence[Sequence[str]],
        references: Sequence[str],
        k: Sequence[int] = (1, 10, 100),
        num_workers: int = 4,
        timeout: float = 3.0,
    ) -> tuple[dict[str, float], dict[int, list[tuple[int, dict[str, Any]]]]]:
        """Run every candidate of problem ``i`` followed by ``references[i]`` (its asserts).

        Returns ``({"pass@k": mean over problems}, {problem: [(candidate, {"passed", "result"}), ...]})``;
        ``pass@k`` is reported only for the ``k`` not above every problem's number of candidates.
        """
        if not allowed():
            from fsgen_eval.lm_eval.args import OneLineError  # lm-eval loads mbpp: one line, no traceback

            raise OneLineError(
                f"code_eval runs untrusted model-written code; set {GATE_ENV}=1 to allow it "
                "(and pass --confirm_run_unsafe_code to lm_eval)"
            )
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        jobs = [(i, j, f"{cand}\n{references[i]}\n") for i, cands in enumerate(predictions)
                for j, cand in enumerate(cands)]
        active = protections()
        layers = ",".join(active)
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            outcomes = list(pool.map(lambda job: run_program(job[2], timeout), jobs))
        results: dict[int, list[tuple[int, dict[str, Any]]]] = {i: [] for i in range(len(predictions))}
        for (i, j, _), outcome in zip(jobs, outcomes, strict=True):
            results[i].append((j, {"passed": outcome == "passed", "result": outcome, "sandbox": layers,
                                   "sandbox_fallback": FALLBACK in active}))
        totals = [len(results[i]) for i in results]
        correct = [sum(r["passed"] for _, r in results[i]) for i in results]
        scores = {
            f"pass@{kk}": sum(pass_at_k(n, c, kk) for n, c in zip(totals, correct, strict=True)) / len(totals)
            for kk in k
            if totals and min(totals) >= kk
        }
        return scores, results

