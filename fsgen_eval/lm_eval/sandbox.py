"""Run one untrusted Python program (a model-written MBPP solution) as contained as this machine allows.

Layers, each used where the machine offers it (:func:`protections` names those active; the first program run
logs them, and every candidate's result in :class:`~fsgen_eval.lm_eval.code_eval.CodeEval` carries them):

The results of an lm-eval run record them too, as ``config["fsgen"]["code_eval_sandbox"]``.

- ``session``: its own session and process group, killed as a group at the timeout.
- ``rlimits``: address space, CPU seconds, processes, file size and core dumps capped before it starts.
- ``scratch_dir``: a fresh empty working folder, removed afterwards.
- ``clean_env``: nothing from the harness's environment (a fixed ``PATH``, ``HOME`` = the folder).
- ``parent_death``: killed when the harness dies (Linux parent-death signal).
- ``pid_namespace``: it sees only its own processes (the harness has no pid it can name, ``getppid()`` is 0);
  when its main process ends, the kernel kills everything it left behind.
- ``mount_namespace`` + ``private_root``: it runs in a new root holding, read-only, only ``/usr`` (and its
  ``/bin``, ``/lib`` links), the interpreter and the virtual environment; its folder writable; an empty
  ``/tmp``; ``/dev/null``, ``zero``, ``random``, ``urandom``; its own ``/proc``. Nothing else of the machine
  can be read or written (``/root``, ``/work``, ``/etc``, ``/home`` are not there).
- ``network_namespace``: no network.
- ``own_uid`` (harness runs as root): a fresh unused uid, so the process limit is its own and it owns nothing
  but its folder. Otherwise ``user_namespace``: the namespaces are made unprivileged.
- ``no_capabilities``: every capability dropped, no new privileges.

Where ``unshare`` (util-linux) or namespaces are unavailable the program gets the first five layers only:
then it can signal the harness, read what the harness's user can read, and a child that leaves its session is
not killed. ``FSGEN_CODE_EVAL_SANDBOX=basic`` asks for that fallback (tests use it).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODE_ENV = "FSGEN_CODE_EVAL_SANDBOX"  # "auto" (default: every layer that works) or "basic"
BASE_LAYERS = ("session", "rlimits", "scratch_dir", "clean_env", "parent_death")
NS_LAYERS = ("pid_namespace", "mount_namespace", "private_root", "network_namespace", "no_capabilities")
# fresh uids for programs: far above any real account (Linux uids are 32-bit; 2**32 - 1 is reserved)
UID_BASE, UID_SPAN = 3_000_000_000, 1_000_000_000
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Trusted code the sandbox's interpreter runs before the program; argv[1] is a JSON object (the plan).
# Stage "outer" (the process the harness started) sets the parent-death signal and the rlimits, then runs the
# program, or re-executes itself as stage "inner" under `unshare`. "inner" is pid 1 of fresh pid, mount and
# network namespaces: it builds the private root, forks the program (which drops its uid and every
# capability), and exits with its status, at which the kernel kills whatever the program left in the namespace.
_BOOT = r'''
import ctypes, json, os, resource, runpy, signal, sys
plan = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
RDONLY, NOSUID, NODEV, REMOUNT, BIND, REC = 1, 2, 4, 32, 4096, 16384

def mount(src, dst, fstype, flags, data=""):
    if libc.mount(src.encode(), dst.encode(), fstype.encode(), flags, data.encode()):
        raise OSError(ctypes.get_errno(), f"mount {src} on {dst}")

def bind(src, dst, writable=False):
    if os.path.isdir(src):
        os.makedirs(dst, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, "", BIND | REC)
    flags = BIND | REMOUNT | NOSUID | (0 if writable else RDONLY) | (0 if src.startswith("/dev/") else NODEV)
    mount("", dst, "", flags)

def private_root(root):
    mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=1m,mode=0755")
    for link, target in plan["links"].items():
        os.symlink(target, root + link)
    # /tmp first: an interpreter or venv that lives under /tmp is bound on top of it, not hidden by it
    os.makedirs(root + "/tmp", mode=0o755)
    mount("tmpfs", root + "/tmp", "tmpfs", NOSUID | NODEV, "size=16m,mode=1777")
    for path in plan["ro"]:
        bind(path, root + path)
    for dev in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"):
        bind(dev, root + dev, writable=True)
    os.makedirs(root + "/proc", mode=0o555)
    mount("proc", root + "/proc", "proc", NOSUID | NODEV)
    bind(plan["work"], root + plan["work"], writable=True)
    os.chroot(root)
    os.chdir(plan["work"])

def drop_privileges():
    uid = plan["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last capability)
    hdr, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    if libc.capset(hdr, data) or libc.prctl(38, 1, 0, 0, 0):  # no capabilities; PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "dropping capabilities")

def run():
    runpy.run_path("program.py", run_name="__main__")

if plan["stage"] == "outer":
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the harness
    if os.getppid() != plan["harness"]:  # the harness died before the line above
        os._exit(111)
    lim = plan["limits"]
    for res, val in ((resource.RLIMIT_AS, lim["memory"]), (resource.RLIMIT_NPROC, lim["processes"]),
                     (resource.RLIMIT_FSIZE, lim["file"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (val, val))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))  # SIGXCPU first, then SIGKILL
    if plan["unshare"]:
        plan["stage"] = "inner"
        os.execv(plan["unshare"][0], plan["unshare"] + [sys.executable, "-I", "-B", "-c", BOOT, json.dumps(plan)])
    run()
else:
    try:
        private_root(plan["root"])
    except OSError as err:
        print(f"fsgen sandbox: {err}", file=sys.stderr)
        os._exit(112)
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges()
        except OSError as err:
            print(f"fsgen sandbox: {err}", file=sys.stderr)
            os._exit(113)
        run()
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
'''


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    memory_mb: int = 1024  # address space
    cpu_s: int = 4  # CPU seconds (the wall-clock timeout is separate)
    processes: int = 32  # of its own uid; on top of the harness user's count where it has none
    file_mb: int = 16  # the largest file it may write (its stderr included)


@dataclass(frozen=True)
class Outcome:
    """How a program ended: ``returncode`` (None when killed at the timeout) and the tail of its stderr."""

    returncode: int | None
    stderr_tail: str
    layers: tuple[str, ...]

    @property
    def timed_out(self) -> bool:
        """The program was killed at its time limit (it has no exit status)."""
        return self.returncode is None


def _mode() -> str:
    mode = os.environ.get(MODE_ENV, "auto")
    if mode not in ("auto", "basic"):
        raise ValueError(f"{MODE_ENV}={mode!r}: expected 'auto' or 'basic'")
    return mode


def _unshare_argv() -> list[str] | None:
    """``unshare`` with the namespaces we ask for (a user namespace too unless we are root)."""
    binary = shutil.which("unshare")
    if binary is None:
        return None
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [binary, *user, "--pid", "--fork", "--mount", "--net", "--kill-child"]


@functools.cache
def _namespaces_work() -> bool:
    """Whether the full sandbox starts here: tried once with a program that checks its own containment."""
    argv = _unshare_argv()
    if argv is None:
        return False
    probe = "import os\nassert os.getppid() == 1 and not os.path.exists('../stderr') and not os.path.exists('/etc')\n"
    try:
        outcome = _run(probe, timeout=20, limits=Limits(), layers=BASE_LAYERS + NS_LAYERS + _uid_layer())
    except OSError:
        return False
    if outcome.returncode != 0:
        log.warning("code_eval sandbox: namespaces unavailable (%s)", outcome.stderr_tail.strip()[-300:])
    return outcome.returncode == 0


def _uid_layer() -> tuple[str, ...]:
    return ("own_uid",) if os.geteuid() == 0 else ("user_namespace",)


def protections(mode: str | None = None) -> tuple[str, ...]:
    """The layers active for programs run by :func:`run_contained` on this machine (see the module doc)."""
    if (mode or _mode()) == "basic" or not _namespaces_work():
        return BASE_LAYERS
    return BASE_LAYERS + NS_LAYERS + _uid_layer()


_used: list[tuple[str, ...]] = []  # the layers of the programs this process ran (for the results)


def used_layers() -> list[str] | None:
    """The layers of the last program this process ran (``None`` if it ran none): written to the results."""
    return list(_used[-1]) if _used else None


@functools.cache
def _announce(layers: tuple[str, ...]) -> None:
    _used.append(layers)
    missing = [name for name in (*NS_LAYERS, *_uid_layer()) if name not in layers]
    log.warning("code_eval sandbox: %s%s", ", ".join(layers),
                f"; NOT active: {', '.join(missing)}" if missing else "")


def _readonly_tree() -> tuple[dict[str, str], list[str]]:
    """What the private root shows: top-level links (``/bin -> usr/bin``) and read-only folders — ``/usr``,
    the interpreter's installation and the virtual environment, each once (outermost first)."""
    links = {p: os.readlink(p) for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32") if os.path.islink(p)}
    wanted = ["/usr", *(p for p in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
                        if os.path.isdir(p) and p not in links),
              os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
              os.path.dirname(os.path.realpath(sys.executable))]
    ro: list[str] = []
    for path in sorted(set(wanted), key=len):
        if os.path.isdir(path) and not any(path == r or path.startswith(r + "/") for r in ro):
            ro.append(path)
    return links, ro


def _processes_of(uid: int) -> int:
    """How many processes run as ``uid`` (RLIMIT_NPROC counts them all)."""
    count = 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid
        except OSError:
            pass  # it ended while we looked
    return count


def _tail(path: Path, limit: int = 4096) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - limit))
        return fh.read().decode("utf-8", "replace")


def run_contained(program: str, timeout: float, limits: Limits = Limits(), mode: str | None = None) -> Outcome:
    """Run ``program`` under every layer of :func:`protections`; returns within about ``timeout`` seconds."""
    layers = protections(mode)
    _announce(layers)
    return _run(program, timeout, limits, layers)


def _run(program: str, timeout: float, limits: Limits, layers: tuple[str, ...]) -> Outcome:
    uid = UID_BASE + secrets.randbelow(UID_SPAN) if "own_uid" in layers else None
    with tempfile.TemporaryDirectory(prefix="fsgen-code-") as tmp:
        os.chmod(tmp, 0o711)  # the program may pass through to its folder, not list or write beside it
        work, root = Path(tmp) / "work", Path(tmp) / "root"
        work.mkdir(mode=0o700)
        root.mkdir(mode=0o700)
        (work / "program.py").write_text(program, encoding="utf-8")
        if uid is not None:
            os.chown(work, uid, uid)
            os.chown(work / "program.py", uid, uid)
        links, ro = _readonly_tree()
        plan = {
            "stage": "outer", "harness": os.getpid(), "uid": uid, "work": str(work), "root": str(root),
            "links": links, "ro": ro, "unshare": _unshare_argv() if "pid_namespace" in layers else None,
            "limits": {"memory": limits.memory_mb << 20, "cpu": limits.cpu_s, "file": limits.file_mb << 20,
                       "processes": limits.processes + (0 if uid is not None else _processes_of(os.getuid()))},
        }
        argv = [sys.executable, "-I", "-B", "-c", f"BOOT = {_BOOT!r}\n{_BOOT}", json.dumps(plan)]
        env = {"PATH": SAFE_PATH, "HOME": str(work), "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        err_path = Path(tmp) / "stderr"
        # stderr goes to a file, not a pipe: a child that keeps it open cannot hold the harness
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        _kill_group(proc)
        tail = _tail(err_path)
    return Outcome(returncode=returncode, stderr_tail=tail, layers=layers)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program's process group; in a pid namespace that includes its init, which takes every
    process of the namespace down with it (a child that left the group too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group
    proc.wait()
