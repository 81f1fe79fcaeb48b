"""Checks every command makes before it starts work: output locations it can write, values echoed short.

Torch-free and numpy-free, so every layer (the lm-eval adapter before it loads models, replay, report) calls
the same rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ECHO_CHARS = 80  # an echoed value (an unknown key, a bad value) is cut to this many characters
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")  # nothing a run writes belongs there


def cut(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr``-free text of ``value`` for an error line: whole when short, else its start and its length."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def writable_folder(path: str | Path, what: str) -> Path:
    """Refuse, in one ``ValueError`` line naming ``what``, a folder that cannot be written: one that is a file,
    lies under a file, under ``/proc``, ``/sys`` or ``/dev``, or whose nearest existing folder is read-only (a
    read-only mount or permissions). Creates nothing; returns the path."""
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    if any(absolute == Path(p) or Path(p) in absolute.parents for p in PSEUDO_FILESYSTEMS):
        raise ValueError(f"{what} {path}: under /{absolute.parts[1]}, where no results can be written")
    existing = absolute
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        named = "is a file, not a folder" if existing == absolute else f"lies under {existing}, which is a file"
        raise ValueError(f"{what} {path}: {named}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: {existing} is not writable (read-only or not ours)")
    return path


def write_failed(path: Path, tmp: Path, err: OSError) -> ValueError:
    """The one line for a write that failed mid-way (a full disk): what failed and which temporary file holds
    what was written (left for the user to inspect; the final name was never touched)."""
    left = f"; {tmp} holds what was written" if tmp.exists() else ""
    return ValueError(f"writing {path} failed ({err.strerror or err}){left}; finished files are intact")


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through ``<path>.tmp`` and a rename (a crash leaves no torn file); a failed
    write (a full disk) is one ``ValueError`` line naming the ``.tmp`` it left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        raise write_failed(path, tmp, err) from None
