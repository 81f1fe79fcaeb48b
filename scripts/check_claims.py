"""Check that every figure README's findings quote appears in the committed file it cites.

Citation convention (README.md, between the lines ``<!-- claims -->`` and ``<!-- /claims -->``): a quoted
figure is a Markdown link whose text is the number and whose target is the committed file holding it, e.g.
``[0.139](reports/micro/rates.md)`` or ``[65 %](reports/micro/analyze.txt)``. A figure holds when the file
contains a number that, rounded once to the figure's decimals, gives the figure (``0.139`` from
``0.13935533``; ``65 %`` from ``0.6512`` or ``65.12``); a file path must be tracked by git. A number exactly
halfway is rounded half to even, one convention rather than whichever suits: ``0.3225`` (itself 0.322468
rounded) gives 0.322, as the unrounded value does, and 0.323 — a second rounding — does not hold; an exact
``0.0075`` (9 of 1200) gives 0.8 %.

Usage: python scripts/check_claims.py [README.md]   (exit 0: all hold; 1: one line per figure that does not)
"""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

CLAIMS = re.compile(r"<!-- claims -->(.*?)<!-- /claims -->", re.S)
LINK = re.compile(r"\[([−\-+]?\d[\d ,]*(?:\.\d+)?(?:e[−\-+]?\d+)?)\s*(%?)\]\(([^)#\s]+)\)")
NUMBER = re.compile(r"[−\-+]?\d+(?:\.\d+)?(?:[eE][−\-+]?\d+)?")


def cited(text: str) -> list[tuple[str, bool, str]]:
    """(figure, is a percentage, cited path) for every cited figure in the claims sections of ``text``."""
    out = []
    for block in CLAIMS.findall(text):
        out += [(m.group(1), bool(m.group(2)), m.group(3)) for m in LINK.finditer(block)]
    return out


def _dec(s: str) -> Decimal | None:
    try:
        return Decimal(s.replace("−", "-").replace(" ", "").replace(",", ""))
    except InvalidOperation:
        return None


def holds(figure: str, percent: bool, content: str) -> bool:
    """Whether a number in ``content`` rounds once to ``figure`` (half to even: see above)."""
    want = _dec(figure)
    if want is None:
        return False
    quantum = Decimal(1).scaleb(want.as_tuple().exponent)
    for tok in NUMBER.findall(content):
        v = _dec(tok)
        if v is None:
            continue
        for cand in ((v, v * 100) if percent else (v,)):
            try:
                if cand.quantize(quantum, rounding=ROUND_HALF_EVEN) == want:
                    return True
            except InvalidOperation:  # a number too large to round to the figure's decimals (8.28e+21): not it
                continue
    return False


def tracked(root: Path) -> set[str] | None:
    """Paths git tracks under ``root`` (``None`` outside a git work tree: every existing file counts)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.splitlines())


def check(readme: Path) -> list[str]:
    """One line per cited figure that does not hold; also one if the README cites nothing."""
    root = readme.parent
    claims = cited(readme.read_text(encoding="utf-8"))
    if not claims:
        return [f"{readme}: no cited figure between <!-- claims --> and <!-- /claims -->"]
    files = tracked(root)
    problems = []
    for figure, percent, path in claims:
        target = root / path
        shown = f"[{figure}{' %' if percent else ''}]({path})"
        if files is not None and path not in files:
            problems.append(f"{readme}: {shown}: {path} is not a committed file")
        elif not target.is_file():
            problems.append(f"{readme}: {shown}: {path} does not exist")
        elif not holds(figure, percent, target.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{readme}: {shown}: no number in {path} rounds to {figure}")
    return problems


def main(argv: list[str]) -> int:
    readme = Path(argv[0] if argv else Path(__file__).resolve().parent.parent / "README.md")
    problems = check(readme)
    print("\n".join(problems) if problems else f"{readme}: {len(cited(readme.read_text()))} cited figures hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
