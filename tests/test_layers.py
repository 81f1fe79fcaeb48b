"""The layer rules, checked in a fresh interpreter: the analysis (and the registries' metadata it reads)
never imports torch; the engine never imports lm-eval."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


def test_analysis_and_router_metadata_are_torch_free():
    mods = _modules_after(
        "import fsgen_eval.analysis.report, fsgen_eval.analysis.whatif, fsgen_eval.cli.analysis; "
        "from fsgen_eval.experiments import sweep; sweep.parse_router('entropy@1.5'); sweep.parse_method('oracle'); "
        "from fsgen_eval.analysis.whatif import native_router; assert native_router('s1_entropy')[0] == 'entropy'")
    assert "torch" not in mods


def test_engine_does_not_import_lm_eval():
    mods = _modules_after("import fsgen_eval.engine.api, fsgen_eval.engine.decode, fsgen_eval.engine.score")
    assert "torch" in mods and "lm_eval" not in mods
