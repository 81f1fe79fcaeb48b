"""Replay's output is the same, byte for byte, as the replay code of main at c3f9bac wrote it on a fixed run, plus
the speculative metrics issue 22 added (per-position rates, histograms, macro means, request counts: the golden
files were rewritten when they landed, with no line of the old ones changed or removed).

The golden files (tests/data/replay_golden/) hold every trace line, top-K side-file row and ``config.fsgen``
(ids, times and paths left out) of ``fsgen-eval replay`` on a hand-built System 2 run of the committed arith
pair (tests/_replay_golden.py): with the large model (tails decoded, shared-prefix and right-padded scoring,
two System 1 models, speculative counters, top-K) and without it. Any refactoring of the replay path that
changes a digit of a trace fails here.
"""

from __future__ import annotations

import difflib

import pytest

from _replay_golden import GOLDEN, RUNS, canonical, replay_snapshot


@pytest.mark.parametrize("run", list(RUNS))
def test_replay_writes_the_golden_output(tmp_path, run):
    got = canonical(replay_snapshot(tmp_path, run))
    want = (GOLDEN / f"{run}.json").read_text()
    if got != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "now"))[:60])
        pytest.fail(f"replay's output changed ({run}):\n{diff}")
