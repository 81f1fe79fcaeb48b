"""Hostile generated programs against code_eval's sandbox: the harness survives, the program fails, nothing
outlives it, nothing is written outside its folder, and the harness's secrets stay unread.

Each program runs under a real harness (a Python process calling ``run_program``, with a secret in its
environment), so a program that kills its parent kills that process, not pytest. Where the machine lacks
namespaces, the layers a test relies on must be reported missing instead (``protections()``); on a machine
with them (this one) every containment assert below runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from fsgen_eval.lm_eval.sandbox import BASE_LAYERS, protections
from _proc_helpers import pids_with

FULL = "pid_namespace" in protections("auto") and "private_root" in protections("auto")

HARNESS = textwrap.dedent("""
    import json, sys
    from fsgen_eval.lm_eval.code_eval import run_program
    print(json.dumps(run_program(sys.stdin.read(), timeout=float(sys.argv[1]))))
""")



def harness(program: str, timeout: float = 2.0, mode: str = "auto", secret: str = "") -> tuple[str, float]:
    """Run ``program`` through a harness process; returns its outcome and the seconds the harness took."""
    env = {**os.environ, "FSGEN_CODE_EVAL_SANDBOX": mode, "FSGEN_TEST_SECRET": secret}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HARNESS, str(timeout)], input=program, text=True, env=env,
                          capture_output=True, timeout=120)
    took = time.monotonic() - start
    assert done.returncode == 0, f"the harness died (status {done.returncode}): {done.stderr[-500:]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), took


def test_killing_the_parent_kills_nothing_but_the_program():
    prog = "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(30)\n"
    if not FULL:
        assert "pid_namespace" not in protections()
        return
    outcome, _ = harness(prog, timeout=1.5)  # asserts the harness survived
    assert outcome != "passed"


def test_the_harness_environment_cannot_be_read():
    secret = uuid.uuid4().hex
    prog = textwrap.dedent(f"""
        import os
        found = [k for k, v in os.environ.items() if "{secret[:8]}" in v]
        for pid in [os.getppid()] + [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                if b"{secret[:8]}" in open(f"/proc/{{pid}}/environ", "rb").read():
                    found.append(pid)
            except OSError:
                pass
        raise SystemExit("LEAK" if found else "no leak")
    """)
    for mode in ("auto", "basic"):
        outcome, _ = harness(prog, mode=mode, secret=secret)
        if mode == "basic" and "own_uid" not in protections("basic"):
            # the fallback's clean environment hides the secret from os.environ only: /proc/<ppid>/environ
            # of a harness of the same uid stays readable there (the docs say so)
            continue
        assert outcome == "failed: no leak", (mode, outcome)


def test_nothing_is_written_outside_its_folder(tmp_path):
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o777)  # anyone may write here: only the sandbox stands in the way
    shared_tmp = Path("/tmp") / f"fsgen-sandbox-test-{uuid.uuid4().hex}"
    prog = textwrap.dedent(f"""
        wrote = []
        for path in ({str(target / "escaped.txt")!r}, {str(shared_tmp)!r}, "../beside.txt"):
            try:
                open(path, "w").write("x")
                wrote.append(path)
            except OSError:
                pass
        open("inside.txt", "w").write("its own folder is writable")
        raise SystemExit(f"wrote {{wrote}}")
    """)
    outcome, _ = harness(prog)
    assert not (target / "escaped.txt").exists() and not shared_tmp.exists()
    if FULL:
        # only its own empty /tmp took the write (gone with it); the machine's /tmp did not
        assert outcome == f"failed: wrote [{str(shared_tmp)!r}]"


def test_files_of_the_machine_cannot_be_read(tmp_path):
    readable = tmp_path / "world_readable.txt"
    readable.write_text("SECRET-WORLD")
    readable.chmod(0o644)
    private = tmp_path / "harness_only.txt"
    private.write_text("SECRET-HARNESS")
    private.chmod(0o600)
    tmp_path.chmod(0o755)
    prog = textwrap.dedent(f"""
        import os
        seen = []
        for path in ({str(readable)!r}, {str(private)!r}, "/etc/passwd", "/proc/1/root/etc/passwd"):
            try:
                open(path).read()
                seen.append(path)
            except OSError:
                pass
        raise SystemExit(f"read {{seen}}")
    """)
    outcome, _ = harness(prog)
    if FULL:
        assert outcome == "failed: read []"
    else:  # without a private root, world-readable files stay readable: reported, not hidden
        assert "private_root" not in protections()


def test_a_child_in_a_new_session_does_not_outlive_the_harness():
    marker = f"{time.time() % 1000:.6f}"  # a sleep duration no other process uses
    prog = textwrap.dedent(f"""
        import os, subprocess
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
                os._exit(0)
            os._exit(0)
        import time; time.sleep(0.5)
    """)
    harness(prog, timeout=1.5)
    time.sleep(0.2)
    survivors = pids_with(marker)
    if FULL:
        assert survivors == []
    else:  # the fallback kills the session's group only
        for pid in survivors:
            os.kill(pid, 9)
        assert "pid_namespace" not in protections()


def test_a_child_holding_stderr_open_does_not_hold_the_harness():
    marker = f"{time.time() % 1000 + 1000:.6f}"
    prog = textwrap.dedent(f"""
        import os, subprocess
        subprocess.Popen(["sleep", "{marker}"], start_new_session=True)  # inherits stderr
        print("still writing", flush=True)
    """)
    for mode in ("auto", "basic"):
        outcome, took = harness(prog, timeout=1.0, mode=mode)
        assert outcome == "passed" and took < 20, (mode, outcome, took)
        for pid in pids_with(marker):  # (the basic fallback leaves the escaped sleep: tested above)
            os.kill(pid, 9)


def test_a_fork_bomb_is_bounded_by_the_process_limit():
    if not FULL:  # the fallback has no process limit of its own under a root harness: never run a bomb there
        assert "own_uid" not in protections()
        return
    marker = f"{time.time() % 1000 + 2000:.6f}"
    prog = textwrap.dedent(f"""
        import os
        while True:
            if os.fork() == 0:
                os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
    """)
    outcome, took = harness(prog, timeout=3.0)
    assert outcome.startswith("failed: BlockingIOError") and took < 60, outcome
    time.sleep(0.2)
    assert pids_with(marker) == []


def test_a_huge_allocation_fails_alone():
    outcome, _ = harness("x = bytearray(4 * 2**30)\n", timeout=2.0)
    assert outcome == "failed: MemoryError"


def test_timeout_kills_the_program_and_the_result_says_so():
    outcome, took = harness("while True:\n    pass\n", timeout=1.0)
    assert outcome == "timed out" and took < 20


def test_the_active_protections_are_named():
    active = protections()
    assert active[: len(BASE_LAYERS)] == BASE_LAYERS
    assert protections("basic") == BASE_LAYERS
    with pytest.raises(ValueError, match="FSGEN_CODE_EVAL_SANDBOX"):
        os.environ["FSGEN_CODE_EVAL_SANDBOX"] = "none"
        try:
            protections()
        finally:
            del os.environ["FSGEN_CODE_EVAL_SANDBOX"]
