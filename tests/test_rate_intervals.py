"""scripts/rate_intervals.py: clustered vs token-level intervals and the ±target count, on fake sweeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from analysis_helpers import make_trace, write_run

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rate_intervals.py"


def _rows(out: str) -> dict[str, list[str]]:
    """Table rows keyed by the small model's name: the cells of each row."""
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| gsm8k")]
    return {r[1].strip(): [c.strip() for c in r] for r in rows}


def test_loops_widen_the_clustered_interval_not_the_token_one(tmp_path):
    rng = np.random.default_rng(0)
    n_req, length = 200, 100
    # "loop": each request agrees or disagrees for all its tokens (as a model stuck in a repetition loop);
    # "iid": every token flips its own coin. Both have a rate near 0.3 and the same token count.
    loop = [make_trace([1.0] * length, [rng.random() < 0.3] * length) for _ in range(n_req)]
    iid = [make_trace(list(rng.gamma(2.0, 0.5, length)), list(rng.random(length) < 0.3)) for _ in range(n_req)]
    write_run(tmp_path / "sweep" / "a", "loop", "big", traces={"gsm8k": loop})
    write_run(tmp_path / "sweep" / "b", "iid", "big", traces={"gsm8k": iid})
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"family": "t", "models": [
        {"name": "loop", "total_params": 100}, {"name": "iid", "total_params": 100},
        {"name": "big", "total_params": 1000}]}))
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep"), "--params", str(params)],
                         capture_output=True, text=True, check=True).stdout
    rows = _rows(out)
    # columns: task small large ratio requests tokens rate ±clustered within ±token design AUROC
    for name in ("loop", "iid"):
        r = rows[name]
        assert r[3] == "10.0" and r[4] == str(n_req) and r[5] == str(n_req * length)
    loop_half, iid_half = float(rows["loop"][7]), float(rows["iid"][7])
    assert loop_half > 0.05 and rows["loop"][8] == "**no**"  # 200 independent coins, not 20 000
    assert iid_half < 0.015 and abs(float(rows["iid"][10]) - 1.0) < 0.5  # design effect ~1 when independent
    assert float(rows["loop"][10]) > 30  # ~ the request length: one request is worth one observation
    assert abs(float(rows["loop"][9]) - float(rows["iid"][9])) < 0.002  # token-level ignores the loops
    assert rows["iid"][8] == "yes"
    assert "Clustered 95 % intervals within ±0.01: 1 of 2; token-level: 2 of 2." in out
