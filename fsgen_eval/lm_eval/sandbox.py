"""Run one untrusted Python program (a model-written MBPP solution) as contained as this machine allows.

Layers, each used where the machine offers it (:func:`protections` names those active; the first program run
logs them, and every candidate's result in :class:`~fsgen_eval.lm_eval.code_eval.CodeEval` carries them):

The results of an lm-eval run record them too, as ``config["fsgen"]["code_eval_sandbox"]``: the model asks
:func:`~fsgen_eval.lm_eval.code_eval.sandbox_layers` (a probe of this machine, no record of earlier runs) when
it writes its info.

- ``session``: its own session and process group, killed as a group at the timeout.
- ``rlimits``: address space, CPU seconds, processes, file size and core dumps capped before it starts.
- ``scratch_dir``: a fresh empty working folder, removed afterwards (``rm -rf``: however deep it nests, a
  failed removal is logged and never fails the other programs).
- ``clean_env``: nothing from the harness's environment (a fixed ``PATH``, ``HOME`` = the folder).
- ``parent_death``: killed when the harness dies (Linux parent-death signal).
- ``completion_marker``: it passes only if its last statement (the tests' last assert) was reached: the runner
  writes a per-run secret, which the program is never given (not in its argv, environment or files), to a
  pipe the harness reads, after the program's code returned. ``sys.exit(0)``, ``exit()``, ``os._exit(0)``,
  a signal or a fork whose parent exits early all end without it. (A program that searches the interpreter's
  own frames for the secret could forge it: the bound is against code that ends early, not against forgery.)
- ``own_keyring``: a new, empty session keyring (the harness's keys cannot be read).
- ``cgroup_memory``, ``cgroup_pids``: all its processes together hold at most the memory limit and the
  process count (a cgroup beneath the harness's own, v2 or v1, where it may make one); without them the
  sum is bounded only by processes x address space.
- ``pid_namespace``: it sees only its own processes (the harness has no pid it can name, ``getppid()`` is 0);
  when its main process ends, the kernel kills everything it left behind.
- ``mount_namespace`` + ``private_root``: it runs in a new root holding, read-only, only ``/usr`` (and its
  ``/bin``, ``/lib`` links), the interpreter and the virtual environment; its folder writable; an empty
  ``/tmp``; ``/dev/null``, ``zero``, ``random``, ``urandom``; its own ``/proc``. Nothing else of the machine
  can be read or written (``/root``, ``/work``, ``/etc``, ``/home`` are not there).
- ``folder_tmpfs``: its folder is a tmpfs of fixed size (``Limits.disk_mb``; ``/tmp`` 16 MB): all its files
  together are bounded, and they vanish with it.
- ``network_namespace``: no network. ``ipc_namespace``: its SysV shared memory, semaphores and queues die
  with it.
- ``own_uid`` (harness runs as root): a fresh unused uid, so the process limit is its own and it owns nothing
  but its folder. Otherwise ``user_namespace``: the namespaces are made unprivileged.
- ``no_capabilities``: every capability dropped (bounding, ambient, inheritable, permitted, effective sets),
  no new privileges.

Where ``unshare`` (util-linux) or namespaces are unavailable the program gets the base layers only and the
list says ``fallback_no_namespaces``: then it can read what its user can read, and a child that leaves its
session is not killed (unless a cgroup holds it). A root harness then still runs it as a fresh unprivileged
uid with no capabilities (``own_uid``, ``no_capabilities``) and removes the SysV IPC objects that uid left
(``sysv_ipc_cleanup``). ``FSGEN_CODE_EVAL_SANDBOX=basic`` asks for that fallback (tests use it).
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
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODE_ENV = "FSGEN_CODE_EVAL_SANDBOX"  # "auto" (default: every layer that works) or "basic"
BASE_LAYERS = ("session", "rlimits", "scratch_dir", "clean_env", "parent_death", "completion_marker", "own_keyring")
NS_LAYERS = ("pid_namespace", "mount_namespace", "private_root", "folder_tmpfs", "network_namespace",
             "ipc_namespace", "no_capabilities")
FALLBACK = "fallback_no_namespaces"  # in the layers (and so in the results) whenever namespaces were not used
ROOT_FALLBACK_LAYERS = ("own_uid", "no_capabilities", "sysv_ipc_cleanup")  # the fallback under a root harness
# fresh uids for programs: far above any real account (Linux uids are 32-bit; 2**32 - 1 is reserved)
UID_BASE, UID_SPAN = 3_000_000_000, 1_000_000_000
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Trusted code the sandbox's interpreter runs before the program; argv[1] is a JSON object (the plan), stdin
# the completion secret. Stage "outer" (the process the harness started) joins the program's cgroups, a new
# session keyring, sets the parent-death signal and the rlimits, then runs the program (dropping root first
# where it has a uid of its own), or re-executes itself as stage "inner" under `unshare`. "inner" is pid 1 of
# fresh pid, mount, network and IPC namespaces: it builds the private root, forks the program (which drops its
# uid and every capability), and exits with its status, at which the kernel kills whatever the program left in
# the namespace.
_BOOT = r'''
import ctypes, json, os, resource, runpy, signal, sys
plan = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
RDONLY, NOSUID, NODEV, REMOUNT, BIND, REC = 1, 2, 4, 32, 4096, 16384
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 38, 47, 4
KEYCTL = {"x86_64": 250, "aarch64": 219, "arm64": 219, "ppc64le": 283, "s390x": 280}.get(os.uname().machine)

def fail(code, message):
    print(f"fsgen sandbox: {message}", file=sys.stderr)
    os._exit(code)

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
    # its folder: a tmpfs of fixed size, so all its files together are bounded (and vanish with it)
    with open(plan["work"] + "/program.py", "rb") as fh:
        source = fh.read()
    work = root + plan["work"]
    os.makedirs(work, mode=0o700, exist_ok=True)
    mount("tmpfs", work, "tmpfs", NOSUID | NODEV, f"size={plan['limits']['disk']},mode=0700")
    with open(work + "/program.py", "wb") as fh:
        fh.write(source)
    if plan["uid"] is not None:
        os.chown(work, plan["uid"], plan["uid"])
        os.chown(work + "/program.py", plan["uid"], plan["uid"])
    os.chroot(root)
    os.chdir(plan["work"])

def drop_privileges():
    # the bounding set first: dropping it needs CAP_SETPCAP, which the uid change below takes away
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0):
            if ctypes.get_errno() != 22:  # EINVAL: past the last capability this kernel knows
                raise OSError(ctypes.get_errno(), f"dropping capability {cap} from the bounding set")
            break
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) and ctypes.get_errno() != 22:
        raise OSError(ctypes.get_errno(), "clearing the ambient capabilities")
    uid = plan["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    hdr, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable
    if libc.capset(hdr, data) or libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "dropping capabilities")
    with open("/proc/self/status") as fh:
        left = [line.split(":")[0] for line in fh if line.startswith("Cap") and int(line.split()[1], 16)]
    if left:
        raise OSError(0, f"capabilities left in {', '.join(left)}")

def run():
    # the completion secret: read, then stdin closed, so the program never sees it
    nonce = os.read(0, 64)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    runpy.run_path("program.py", run_name="__main__")
    # reached only when the program's last statement (its last assert) ran: no exit, signal or exception
    os.write(plan["marker_fd"], nonce)

if plan["stage"] == "outer":
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the harness
    if os.getppid() != plan["harness"]:  # the harness died before the line above
        os._exit(111)
    for procs in plan["cgroups"]:  # before anything else runs, so every process it makes is counted
        try:
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))
        except OSError as err:
            fail(114, f"joining cgroup {procs}: {err}")
    # a new, empty session keyring: the harness's keys stay out of reach
    if KEYCTL is None or libc.syscall(KEYCTL, 1, None) < 0:  # KEYCTL_JOIN_SESSION_KEYRING (anonymous)
        fail(115, f"joining a new session keyring (errno {ctypes.get_errno()})")
    lim = plan["limits"]
    for res, val in ((resource.RLIMIT_AS, lim["memory"]), (resource.RLIMIT_NPROC, lim["processes"]),
                     (resource.RLIMIT_FSIZE, lim["file"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (val, val))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))  # SIGXCPU first, then SIGKILL
    if plan["unshare"]:
        plan["stage"] = "inner"
        os.execv(plan["unshare"][0], plan["unshare"] + [sys.executable, "-I", "-B", "-c", BOOT, json.dumps(plan)])
    if plan["uid"] is not None:  # the fallback under a root harness: never run the program as root
        # the interpreter may live where the fresh uid cannot pass (/root/.pyenv): its import folders are
        # opened now and reached through /proc/self/fd, which checks no permission above the opened folder
        fds = {p: f"/proc/self/fd/{os.open(p, os.O_RDONLY | os.O_DIRECTORY)}" for p in sys.path if os.path.isdir(p)}
        sys.path[:] = [fds.get(p, p) for p in sys.path]
        # packages imported already (collections, by json's imports above) find their submodules through
        # __path__: point it into the opened folders too, longest folder first
        for mod in list(sys.modules.values()):
            paths = getattr(mod, "__path__", None)
            if isinstance(paths, list):
                paths[:] = [next((fds[p] + q[len(p):] for p in sorted(fds, key=len, reverse=True)
                                  if q == p or q.startswith(p + "/")), q) for q in paths]
        try:
            drop_privileges()
        except OSError as err:
            fail(113, str(err))
        libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid change made /proc/self its no longer
    run()
else:
    try:
        private_root(plan["root"])
    except OSError as err:
        fail(112, str(err))
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges()
        except OSError as err:
            fail(113, str(err))
        run()
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
'''


@dataclass(frozen=True)
class Limits:
    """What one program may use."""

    memory_mb: int = 1024  # address space per process; with a memory cgroup, all its processes together too
    cpu_s: int = 4  # CPU seconds (the wall-clock timeout is separate)
    processes: int = 32  # of its own uid; on top of the harness user's count where it has none
    file_mb: int = 16  # the largest file it may write (its stderr included)
    disk_mb: int = 64  # all the files of its folder together (``folder_tmpfs``)


@dataclass(frozen=True)
class Outcome:
    """How a program ended: ``returncode`` (None when killed at the timeout), the tail of its stderr, and
    whether it reached its end (``completed``: the runner wrote the completion secret after its last line)."""

    returncode: int | None
    stderr_tail: str
    layers: tuple[str, ...]
    completed: bool = False

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
    return [binary, *user, "--pid", "--fork", "--mount", "--net", "--ipc", "--kill-child"]


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
    if not outcome.completed:
        log.warning("code_eval sandbox: namespaces unavailable (%s)", outcome.stderr_tail.strip()[-300:])
    return outcome.completed


def _uid_layer() -> tuple[str, ...]:
    return ("own_uid",) if os.geteuid() == 0 else ("user_namespace",)


def protections(mode: str | None = None) -> tuple[str, ...]:
    """The layers active for programs run by :func:`run_contained` on this machine (see the module doc)."""
    bounds = tuple(f"cgroup_{name}" for name in _cgroup_parents())
    if (mode or _mode()) == "basic" or not _namespaces_work():
        return BASE_LAYERS + bounds + (FALLBACK,) + (ROOT_FALLBACK_LAYERS if os.geteuid() == 0 else ())
    return BASE_LAYERS + bounds + NS_LAYERS + _uid_layer()


@functools.cache
def _announce(layers: tuple[str, ...]) -> None:
    """Log, once per process and set of layers, what programs run under (the results record it per run)."""
    missing = [name for name in (*NS_LAYERS, *_uid_layer(), "cgroup_memory", "cgroup_pids") if name not in layers]
    log.warning("code_eval sandbox: %s%s", ", ".join(layers),
                f"; NOT active: {', '.join(missing)}" if missing else "")
    if FALLBACK in layers:
        log.warning("code_eval sandbox: FALLBACK without namespaces: generated programs can read what %s can "
                    "read and signal its processes; the results say so (code_eval_sandbox: %s)",
                    "a fresh unprivileged uid" if "own_uid" in layers else "this user", FALLBACK)


# --------------------------------------------------------------------------------------------- cgroups
def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(mount point, fstype, options)`` of the cgroup file systems."""
    out = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1], parts[2], set(parts[3].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """The harness's own cgroup per hierarchy: ``""`` for v2, else the v1 controller name."""
    out = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in (controllers.split(",") if controllers else [""]):
                out[name] = path
    return out


def _v2_parent() -> Path | None:
    """The harness's v2 cgroup, where its children may have memory and pids limits (both delegated)."""
    own = _own_cgroups().get("")
    for point, kind, _ in _mounts():
        if kind == "cgroup2" and own is not None:
            parent = Path(point + own)
            try:
                if {"memory", "pids"} <= set((parent / "cgroup.subtree_control").read_text().split()):
                    return parent
            except OSError:
                pass
    return None


@functools.cache
def _cgroup_parents() -> dict[str, tuple[str, Path]]:
    """Bound -> (version, folder beneath which a program's cgroup is made), for ``memory`` and ``pids``, where
    this process may make one: cgroup v2 (both controllers delegated to its own cgroup) or else v1. Tried once."""
    v2 = _v2_parent()
    found: dict[str, tuple[str, Path]] = {}
    own = _own_cgroups()
    for name in ("memory", "pids"):
        if v2 is not None:
            found[name] = ("v2", v2)
            continue
        for point, kind, options in _mounts():
            if kind == "cgroup" and name in options and name in own:
                found[name] = ("v1", Path(point + own[name]))
    usable = {}
    for name, (version, parent) in found.items():
        probe = parent / f"fsgen-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            _write_limit(probe, name, version, 64 << 20, 8)
            usable[name] = (version, parent)
        except OSError:
            pass
        finally:
            _remove_cgroup(probe)
    return usable


def _write_limit(folder: Path, name: str, version: str, memory: int, processes: int) -> None:
    if name == "pids":
        (folder / "pids.max").write_text(str(processes))
    elif version == "v2":
        (folder / "memory.max").write_text(str(memory))
        if (folder / "memory.swap.max").exists():
            (folder / "memory.swap.max").write_text("0")
    else:
        (folder / "memory.limit_in_bytes").write_text(str(memory))
        if (folder / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no escape into swap
            (folder / "memory.memsw.limit_in_bytes").write_text(str(memory))


def _make_cgroups(limits: Limits, layers: tuple[str, ...]) -> list[Path]:
    """One cgroup per bound (one in all for v2) for a program, limits written; the boot joins them."""
    made: list[Path] = []
    name = f"fsgen-code-{secrets.token_hex(6)}"
    for bound, (version, parent) in _cgroup_parents().items():
        if f"cgroup_{bound}" not in layers:
            continue
        folder = parent / name
        if folder not in made:
            folder.mkdir()
            made.append(folder)
        _write_limit(folder, bound, version, limits.memory_mb << 20, limits.processes)
    return made


def _remove_cgroup(folder: Path) -> None:
    """Kill what is left in a program's cgroup and remove it; a cgroup that stays is logged, never raised."""
    for attempt in range(50):
        try:
            if (folder / "cgroup.kill").exists():
                (folder / "cgroup.kill").write_text("1")
            else:
                for pid in (folder / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if attempt == 49:
                log.warning("code_eval sandbox: cgroup %s not removed (%s)", folder, err)
            time.sleep(0.02)  # its processes are still exiting


# ----------------------------------------------------------------------------------------- other bits
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


def remove_tree(path: Path) -> None:
    """Remove a program's scratch folder however deep it nests (``shutil.rmtree`` recurses once per level:
    RecursionError); never raises, a folder left behind is logged."""
    rm = shutil.which("rm")
    try:
        if rm is not None:
            subprocess.run([rm, "-rf", "--one-file-system", "--", str(path)], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=300, check=False)
        else:
            shutil.rmtree(path, ignore_errors=True)
    except (OSError, RecursionError, subprocess.TimeoutExpired) as err:
        log.warning("code_eval sandbox: removing %s: %s", path, err)
    if os.path.lexists(path):
        log.warning("code_eval sandbox: scratch folder %s could not be removed; remove it by hand", path)


_IPC = {"shm": (0, "shmctl"), "msg": (0, "msgctl"), "sem": (0, "semctl")}  # IPC_RMID = 0


def remove_sysv_ipc(uid: int) -> int:
    """Remove the SysV shared memory, queues and semaphores made (or owned) by ``uid``; how many."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    removed = 0
    for kind, (rmid, call) in _IPC.items():
        try:
            rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        head = rows[0].split() if rows else []
        for row in rows[1:]:
            cols = dict(zip(head, row.split()))
            if str(uid) in (cols.get("uid"), cols.get("cuid")):
                ident = int(cols[{"shm": "shmid", "msg": "msqid", "sem": "semid"}[kind]])
                args = (ident, 0, rmid) if kind == "sem" else (ident, rmid, None)
                if getattr(libc, call)(*args) == 0:
                    removed += 1
                else:
                    log.warning("code_eval sandbox: SysV %s %d of uid %d not removed (errno %d)", kind, ident,
                                uid, ctypes.get_errno())
    return removed


def run_contained(program: str, timeout: float, limits: Limits = Limits(), mode: str | None = None) -> Outcome:
    """Run ``program`` under every layer of :func:`protections`; returns within about ``timeout`` seconds."""
    layers = protections(mode)
    _announce(layers)
    return _run(program, timeout, limits, layers)


def _run(program: str, timeout: float, limits: Limits, layers: tuple[str, ...]) -> Outcome:
    uid = UID_BASE + secrets.randbelow(UID_SPAN) if "own_uid" in layers else None
    tmp = Path(tempfile.mkdtemp(prefix="fsgen-code-"))
    cgroups: list[Path] = []
    try:
        cgroups = _make_cgroups(limits, layers)
        return _start_and_wait(program, timeout, limits, layers, uid, tmp, cgroups)
    finally:
        for folder in cgroups:  # first: it kills whatever of the program is left
            _remove_cgroup(folder)
        if uid is not None and "ipc_namespace" not in layers:
            remove_sysv_ipc(uid)
        remove_tree(tmp)


def _start_and_wait(program: str, timeout: float, limits: Limits, layers: tuple[str, ...], uid: int | None,
                    tmp: Path, cgroups: list[Path]) -> Outcome:
    os.chmod(tmp, 0o711)  # the program may pass through to its folder, not list or write beside it
    work, root = tmp / "work", tmp / "root"
    work.mkdir(mode=0o700)
    root.mkdir(mode=0o700)
    (work / "program.py").write_text(program, encoding="utf-8")
    if uid is not None:
        os.chown(work, uid, uid)
        os.chown(work / "program.py", uid, uid)
    links, ro = _readonly_tree()
    marker_r, marker_w = os.pipe()
    nonce = secrets.token_hex(16).encode()
    plan = {
        "stage": "outer", "harness": os.getpid(), "uid": uid, "work": str(work), "root": str(root),
        "links": links, "ro": ro, "unshare": _unshare_argv() if "pid_namespace" in layers else None,
        "cgroups": [str(c / "cgroup.procs") for c in cgroups], "marker_fd": marker_w,
        "limits": {"memory": limits.memory_mb << 20, "cpu": limits.cpu_s, "file": limits.file_mb << 20,
                   "disk": limits.disk_mb << 20,
                   "processes": limits.processes + (0 if uid is not None else _processes_of(os.getuid()))},
    }
    argv = [sys.executable, "-I", "-B", "-c", f"BOOT = {_BOOT!r}\n{_BOOT}", json.dumps(plan)]
    env = {"PATH": SAFE_PATH, "HOME": str(work), "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
    err_path = tmp / "stderr"
    try:
        # stderr goes to a file, not a pipe: a child that keeps it open cannot hold the harness
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True, pass_fds=(marker_w,))
        os.close(marker_w)
        marker_w = -1
        try:
            proc.stdin.write(nonce)  # 32 bytes: a pipe takes them without blocking
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its stderr says why
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        _kill_group(proc)
        completed = _read_marker(marker_r) == nonce
    finally:
        os.close(marker_r)
        if marker_w >= 0:
            os.close(marker_w)
    return Outcome(returncode=returncode, stderr_tail=_tail(err_path), layers=layers, completed=completed)


def _read_marker(fd: int) -> bytes:
    """What the runner wrote to the completion pipe (nothing if the program never reached its end); never
    blocks, even while a child the program left holds the pipe open."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 256)
    except BlockingIOError:
        return b""


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program's process group; in a pid namespace that includes its init, which takes every
    process of the namespace down with it (a child that left the group too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group
    proc.wait()
