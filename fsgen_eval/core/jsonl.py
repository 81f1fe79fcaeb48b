"""Reading JSON-lines files that a killed writer may have left with a torn last line (and JSON files).

One rule for every reader of trace files (analyze, report, check, the run summary): a final line that is not
valid JSON and has no newline after it is what a kill mid-write leaves, so it is skipped with a warning that
says so. Any other line that is not a JSON object is an error (``strict``) or skipped with a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("fsgen_eval")


def read_jsonl(path: Path, strict: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line of ``path``; see the module doc for bad lines."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    torn_possible = not text.endswith("\n")  # then the last element is an unterminated line
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if torn_possible and n == len(lines):
                log.warning("%s:%d: torn final line (the writer was killed mid-write?); skipped", path, n)
                continue
            problem = f"{path}:{n}: not valid JSON ({err.msg})"
            if strict:
                raise ValueError(problem) from None
            log.warning("%s; skipped", problem)
            continue
        if not isinstance(obj, dict):
            if strict:
                raise ValueError(f"{path}:{n}: a trace record must be a JSON object")
            log.warning("%s:%d: not a JSON object; skipped", path, n)
            continue
        yield n, obj


def read_json(path: Path) -> Any:
    """Parse a JSON file; raises naming the file when it is missing, empty or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text()
    if not text.strip():
        raise ValueError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        # err.msg may end in "at" ("Unterminated string starting at"): give the position after a colon
        raise ValueError(f"{path}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno})") from None
