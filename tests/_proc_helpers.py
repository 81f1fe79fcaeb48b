"""Shared by the sandbox and sweep-fault tests: which processes are still alive."""

from __future__ import annotations

import os
from pathlib import Path


def pids_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (any pid namespace: the host's /proc sees them all)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            pass
    return found
