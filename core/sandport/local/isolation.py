"""How the local provider confines a command: bubblewrap, or nothing.

With ``bwrap`` each command runs in new user, pid, ipc, uts and cgroup namespaces (and a new
network namespace unless the network is open). It sees only the read-only system
directories needed to run programs, a few public files of ``/etc``, its own ``/proc`` and
``/dev``, and the sandbox's two writable directories (the workdir and ``/tmp``). The host's
home, ``/tmp`` and other sandboxes are simply not there. All capabilities are dropped and the
process tree dies with the process that started it.

When sandport runs as root, a user namespace alone is not enough: uid 0 inside it is still
host root, the owner of every root-only file the view shows. So the sandbox first drops to
an unprivileged host user (:func:`sandbox_user`) and then appears as uid 0 *inside* its
namespace, owning nothing on the host but its own files.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

__all__ = ["BWRAP_HINT", "Mount", "SandboxUser", "bwrap_command", "bwrap_problem", "sandbox_user", "system_mounts"]

BWRAP_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; Fedora: "
    "`dnf install bubblewrap`), or opt out of isolation explicitly with "
    "options={'isolation': 'none'} (CLI: --no-isolation) and network='open'"
)

# Directories a program needs; mounted read-only when they exist on the host.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The public parts of /etc that programs read; never the host's secrets (shadow, ssh, the
# private keys under ssl/private, ...).
_ETC_FILES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "debian_version", "group",
    "host.conf", "hosts", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
    "mime.types", "nsswitch.conf", "os-release", "passwd", "profile", "protocols",
    "resolv.conf", "services", "ssl/certs", "ssl/openssl.cnf",
)  # fmt: skip
#: The user sandboxes run as when sandport runs as root (override: SANDPORT_LOCAL_USER).
SANDBOX_USER_NAME = "nobody"


@dataclass(frozen=True)
class Mount:
    """One path of the sandbox's view.

    ``host`` is the host file or directory shown at ``path``; ``link`` instead makes
    ``path`` a symlink (as on merged-/usr systems, ``/bin -> usr/bin``).
    """

    path: str
    host: str | None = None
    writable: bool = False
    link: str | None = None


@functools.cache
def system_mounts() -> tuple[Mount, ...]:
    """The read-only system part of every sandbox's view, read off this host."""
    mounts = []
    for path in (*_SYSTEM_DIRS, *(f"/etc/{name}" for name in _ETC_FILES)):
        if os.path.islink(path) and path in _SYSTEM_DIRS:
            mounts.append(Mount(path, link=os.readlink(path)))
        elif os.path.exists(path):
            mounts.append(Mount(path, host=os.path.realpath(path)))
    return tuple(mounts)


@dataclass(frozen=True)
class SandboxUser:
    """The host user a sandbox's processes run as.

    ``drop`` is true when sandport runs as root: commands then switch to ``uid``/``gid``
    before entering their namespaces, and files sandport writes are given to that user.
    """

    uid: int
    gid: int
    drop: bool

    def permits(self, st: os.stat_result, want: int) -> bool:
        """Whether this user, holding no capabilities, has the permission bits ``want``
        (4 read, 2 write, 1 search/execute) on a file with the status ``st``."""
        if st.st_uid == self.uid:
            bits = st.st_mode >> 6
        elif st.st_gid == self.gid:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & want == want

    def popen_args(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments that start the child as this user (done in C
        between fork and exec: a Python ``preexec_fn`` would cost milliseconds per command)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.drop else {}


@functools.cache
def sandbox_user() -> SandboxUser:
    """The host user for sandboxes: this process's own user, or, when that is root, the
    unprivileged ``$SANDPORT_LOCAL_USER`` (default ``nobody``)."""
    if os.geteuid() != 0:
        return SandboxUser(os.getuid(), os.getgid(), drop=False)
    name = os.environ.get("SANDPORT_LOCAL_USER", SANDBOX_USER_NAME)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"sandport runs as root and drops sandboxes to the user {name!r}, which does not exist; "
            "create it or set SANDPORT_LOCAL_USER to an unprivileged user"
        ) from None
    if entry.pw_uid == 0:
        raise RuntimeError(f"SANDPORT_LOCAL_USER={name!r} is root; sandboxes need an unprivileged user")
    return SandboxUser(entry.pw_uid, entry.pw_gid, drop=True)


@functools.cache
def _bwrap_binary() -> str | None:
    return shutil.which("bwrap")


_bwrap_ok = False


def bwrap_problem() -> str | None:
    """None if bwrap is installed and can build a sandbox's view here, else what is wrong.

    The probe runs exactly the namespaces, mounts and user switch of a real sandbox (with a
    scratch workdir), and is tried twice before bwrap is reported unusable: a single probe
    can fail while the host remounts something (Docker does, for ``resolv.conf``). Only
    success is remembered."""
    global _bwrap_ok
    if _bwrap_ok:
        return None
    binary = _bwrap_binary()
    if binary is None:
        return f"bubblewrap (bwrap) is not installed: {BWRAP_HINT}"
    detail = ""
    for _ in range(2):
        detail = _probe()
        if not detail:
            _bwrap_ok = True
            return None
    return (
        f"bwrap cannot build a sandbox on this host ({detail}); enable unprivileged user "
        "namespaces (sysctl kernel.unprivileged_userns_clone=1) or run elsewhere"
    )


def _probe() -> str:
    """Run ``true`` in a throw-away sandbox view; the error text, or "" on success."""
    user = sandbox_user()
    with tempfile.TemporaryDirectory(prefix="sandport-probe-") as scratch:
        os.chmod(scratch, 0o711)
        work = os.path.join(scratch, "work")
        os.mkdir(work)
        os.chown(work, user.uid, user.gid)
        mounts = [*system_mounts(), Mount("/workspace", host=work, writable=True)]
        argv = bwrap_command(mounts, network=False, cwd="/workspace", argv=["/bin/sh", "-c", ":"], user=user)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False, cwd="/", **user.popen_args())
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap could not run: {exc}"
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"


def bwrap_command(
    mounts: list[Mount], *, network: bool, cwd: str, argv: list[str], user: SandboxUser | None = None
) -> list[str]:
    """The bwrap argv that runs ``argv`` in ``cwd`` inside a view made of ``mounts``; with a
    ``user`` that drops root, the sandbox appears as uid 0 inside its namespace."""
    cmd = [
        _bwrap_binary() or "bwrap",
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--cap-drop", "ALL", "--hostname", "sandbox",
        "--proc", "/proc", "--dev", "/dev",
    ]  # fmt: skip
    if user is not None and user.drop:
        cmd += ["--uid", "0", "--gid", "0"]
    if not network:
        cmd.append("--unshare-net")
    for mount in mounts:
        if mount.link is not None:
            cmd += ["--symlink", mount.link, mount.path]
        elif mount.host is not None:
            cmd += ["--bind" if mount.writable else "--ro-bind", mount.host, mount.path]
    return [*cmd, "--chdir", cwd, "--", *argv]
