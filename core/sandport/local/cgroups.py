"""One cgroup per local sandbox: a pids limit, and a record of every process it runs.

A process cannot leave its cgroup without write access to the cgroup filesystem, which a
sandbox never has (bwrap does not mount it, and the sandbox runs as an unprivileged user).
So the cgroup finds every process of the sandbox, including ones that called ``setsid`` and
forked twice to leave their process group, and its ``pids.max`` bounds a fork bomb.

Where cgroups are usable: the cgroup v2 unified hierarchy when this process may create a
child group with the ``pids`` controller, else the cgroup v1 ``pids`` hierarchy (both need
root or a delegated subtree). Elsewhere :func:`cgroup_problem` says why, sandboxes run
without a pids limit, and processes are tracked by process group and parentage instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from pathlib import Path

__all__ = ["DEFAULT_PIDS", "SandboxCgroup", "cgroup_problem"]

#: The pids limit of a sandbox whose spec sets none: a fork bomb stops here.
DEFAULT_PIDS = 1024
_ROOT = Path("/sys/fs/cgroup")
_GROUP = "sandport"


@functools.cache
def _base() -> Path | str:
    """The directory sandbox cgroups are created in, or the reason there is none."""
    v1 = _ROOT / "pids"
    if (v1 / "cgroup.procs").is_file():
        base = v1 / _GROUP
    elif (_ROOT / "cgroup.controllers").is_file():
        own = _own_v2_group()
        if "pids" not in (own / "cgroup.subtree_control").read_text().split():
            return f"the pids controller is not delegated to {own} (cgroup v2)"
        base = own / _GROUP
    else:
        return "no cgroup pids controller is mounted under /sys/fs/cgroup"
    try:
        base.mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        return f"cannot create cgroups under {base.parent} ({exc.strerror}; needs root or a delegated cgroup)"
    if (base / "cgroup.subtree_control").is_file() and "pids" not in (base / "cgroup.subtree_control").read_text():
        try:
            (base / "cgroup.subtree_control").write_text("+pids")
        except OSError as exc:
            return f"cannot enable the pids controller in {base} ({exc.strerror})"
    return base


def _own_v2_group() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return _ROOT / line[3:].lstrip("/")
    return _ROOT


def cgroup_problem() -> str | None:
    """None if sandboxes get a cgroup here, else why not."""
    base = _base()
    return base if isinstance(base, str) else None


class SandboxCgroup:
    """The cgroup of one sandbox (named after it), or of one command inside it (a child
    group, so that killing the command reaches every process it started); usable from any
    process. Where cgroups are unusable every method is a no-op and ``active`` is false."""

    def __init__(self, sandbox_id: str, *, path: Path | None = None) -> None:
        base = _base()
        self.path: Path | None = path if path is not None else None if isinstance(base, str) else base / sandbox_id

    @property
    def active(self) -> bool:
        return self.path is not None and self.path.is_dir()

    def child(self, name: str) -> SandboxCgroup:
        """A group below this one (created by ``create``); the parent's pids limit covers it."""
        return SandboxCgroup(name, path=None if self.path is None else self.path / name)

    def create(self, pids_max: int | None = None, *, joinable_by: int | None = None) -> None:
        """Create the cgroup, with its own pids limit if given. ``joinable_by``: a uid
        that may move itself in (see :meth:`join_argv`); it can change nothing else."""
        if self.path is None:
            return
        self.path.mkdir(mode=0o755, exist_ok=True)
        if pids_max is not None:
            (self.path / "pids.max").write_text(str(pids_max))
        if joinable_by is not None:
            os.chown(self.path / "cgroup.procs", joinable_by, -1)

    def join_argv(self) -> list[str]:
        """A prefix for a command's argv that moves it into the cgroup before it runs, so
        it is inside before it can fork (empty where there is no cgroup)."""
        if self.path is None:
            return []
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs")]

    def pids(self) -> list[int]:
        """Every process in the cgroup and the groups below it, now."""
        if self.path is None:
            return []
        found: list[int] = []
        for directory, _, _ in os.walk(self.path):
            with contextlib.suppress(FileNotFoundError):
                found += [int(pid) for pid in Path(directory, "cgroup.procs").read_text().split()]
        return found

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process in the cgroup."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self, *, wait: float = 5.0) -> None:
        """SIGKILL every process until none is left (children forked meanwhile included);
        gives up after ``wait`` seconds."""
        if not self.active:
            return
        assert self.path is not None
        kill_file = self.path / "cgroup.kill"
        if kill_file.is_file():  # cgroup v2: the kernel kills the whole group at once
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        deadline = time.monotonic() + wait
        while self.pids() and time.monotonic() < deadline:
            self.signal(signal.SIGKILL)
            time.sleep(0.002)

    def discard(self) -> None:
        """Delete the cgroup if nothing runs in it any more (a command's group, once it ended)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def remove(self) -> None:
        """Kill what is left and delete the cgroup and the groups below it."""
        if not self.active:
            return
        self.kill()
        assert self.path is not None
        groups = [Path(d) for d, _, _ in os.walk(self.path)]
        for group in reversed(groups):  # children first
            for _ in range(200):  # a killed process leaves its cgroup once it is reaped
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
