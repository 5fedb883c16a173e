"""How the local provider confines a command: bubblewrap, or nothing.

With ``bwrap`` each command runs in new user, pid, ipc, uts and cgroup namespaces (and a new
network namespace unless the network is open). It sees only the read-only system
directories needed to run programs, a few files of ``/etc``, its own ``/proc`` and ``/dev``,
and the sandbox's two writable directories (the workdir and ``/tmp``). The host's home,
``/tmp`` and other sandboxes are simply not there. All capabilities are dropped and the
process tree dies with the process that started it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["BWRAP_HINT", "Mount", "bwrap_command", "bwrap_problem", "system_mounts"]

BWRAP_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; Fedora: "
    "`dnf install bubblewrap`), or opt out of isolation explicitly with "
    "options={'isolation': 'none'} (CLI: --no-isolation) and network='open'"
)

# Directories a program needs; mounted read-only when they exist on the host.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The parts of /etc that programs read; never the host's secrets (shadow, ssh, ...).
_ETC_FILES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "debian_version", "group",
    "host.conf", "hosts", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
    "mime.types", "nsswitch.conf", "os-release", "passwd", "profile", "protocols",
    "resolv.conf", "services", "ssl",
)  # fmt: skip


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


@functools.cache
def _bwrap_binary() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def bwrap_problem() -> str | None:
    """None if bwrap is installed and can create namespaces here, else what is wrong."""
    binary = _bwrap_binary()
    if binary is None:
        return f"bubblewrap (bwrap) is not installed: {BWRAP_HINT}"
    probe = [binary, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run ({exc}); {BWRAP_HINT}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()
        return (
            f"bwrap cannot create namespaces on this host ({detail}); enable unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1) or run elsewhere"
        )
    return None


def bwrap_command(mounts: list[Mount], *, network: bool, cwd: str, argv: list[str]) -> list[str]:
    """The bwrap argv that runs ``argv`` in ``cwd`` inside a view made of ``mounts``."""
    cmd = [
        _bwrap_binary() or "bwrap",
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--cap-drop", "ALL", "--hostname", "sandbox",
        "--proc", "/proc", "--dev", "/dev",
    ]  # fmt: skip
    if not network:
        cmd.append("--unshare-net")
    for mount in mounts:
        if mount.link is not None:
            cmd += ["--symlink", mount.link, mount.path]
        elif mount.host is not None:
            cmd += ["--bind" if mount.writable else "--ro-bind", mount.host, mount.path]
    return [*cmd, "--chdir", cwd, "--", *argv]
