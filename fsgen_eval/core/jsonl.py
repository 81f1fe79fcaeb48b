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
    """``(line number, object)`` of each non-blank line of ``path``; see the module doc for bad lines.

    Streams the file (a trace file may hold gigabytes): lines split at ``\\n`` only, as the writers end them
    (a generation may hold U+2028, which ``str.splitlines`` would split at)."""
    with open(path, encoding="utf-8", newline="\n") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:
                if not line.endswith("\n"):  # only the last line can lack its newline: a kill mid-write
                    log.warning("%s:%d: torn final line (the writer was killed mid-write?); skipped", path, n)
                    continue
                problem = f"{path}:{n}: not valid JSON ({_why(err)})"
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
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        # err.msg may end in "at" ("Unterminated string starting at"): give the position after a colon
        raise ValueError(f"{path}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno})") from None
    except RecursionError as err:
        raise ValueError(f"{path}: not valid JSON ({_why(err)})") from None
    if nesting(obj) > MAX_DEPTH:
        raise ValueError(f"{path}: JSON nested more than {MAX_DEPTH} levels deep; not a file this tool writes")
    return obj


# Results, baselines and router files are a few levels deep. Deeper objects are refused at the door: code
# that walks them (copying, printing) recurses once per level.
MAX_DEPTH = 64


def _why(err: Exception) -> str:
    return err.msg if isinstance(err, json.JSONDecodeError) else "nested deeper than the JSON parser allows"


def nesting(obj: Any) -> int:
    """How many lists and objects deep ``obj`` is (a scalar: 0), counted without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest
