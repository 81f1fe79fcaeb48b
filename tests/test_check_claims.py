"""scripts/check_claims.py: a figure in README's findings must appear, rounded once, in the file it cites."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_claims", ROOT / "scripts" / "check_claims.py")
check_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_claims)


def _readme(tmp_path: Path, body: str) -> Path:
    (tmp_path / "data.txt").write_text("rate 0.13935533 auroc 0.6512\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro [9.9](data.txt) is outside\n<!-- claims -->\n{body}\n<!-- /claims -->\n")
    return readme


def test_right_figures_hold(tmp_path):
    readme = _readme(tmp_path, "rate [0.139](data.txt), [0.1394](data.txt), [65 %](data.txt)")
    assert check_claims.check(readme) == []


def test_wrong_figure_is_caught(tmp_path):
    readme = _readme(tmp_path, "rate [0.140](data.txt) and [0.139](data.txt)")
    (problem,) = check_claims.check(readme)
    assert "[0.140](data.txt)" in problem and "no number in data.txt rounds to 0.140" in problem


def test_double_rounding_is_caught(tmp_path):
    # 0.3225 is 0.32246... rounded to 4 digits; rounded again it gives 0.323, which the data do not
    (tmp_path / "data.txt").write_text("0.32246809\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- claims -->\n[0.323](data.txt) [0.322](data.txt)\n<!-- /claims -->\n")
    (problem,) = check_claims.check(readme)
    assert "0.323" in problem


def test_missing_file_and_no_claims(tmp_path):
    readme = _readme(tmp_path, "[0.139](nope.txt)")
    assert "does not exist" in check_claims.check(readme)[0]
    (tmp_path / "README.md").write_text("nothing cited\n")
    assert "no cited figure" in check_claims.check(tmp_path / "README.md")[0]


def test_a_tie_rounds_half_to_even_only(tmp_path):
    """A rounded 0.3225 (or 0.0745) in the cited file: 0.323 (0.075) would round a rounded number again and
    is caught; 0.322 (0.074) is what the unrounded value gives and holds, as does an exact 0.0075 -> 0.8 %."""
    (tmp_path / "data.txt").write_text("| 0.3225 | 0.0745 | 0.0075 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- claims -->\n[0.323](data.txt) [0.075](data.txt) [0.322](data.txt) [0.074](data.txt) "
                      "[0.8 %](data.txt)\n<!-- /claims -->\n")
    problems = check_claims.check(readme)
    assert len(problems) == 2 and "[0.323]" in problems[0] and "[0.075]" in problems[1]
