"""A command running under the local provider: a host process (usually ``bwrap``)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import anyio

from sandport.local.cgroups import SandboxCgroup
from sandport.models import OutputChunk
from sandport.process import Process

__all__ = ["LocalProcess", "descendants"]

_READ_SIZE = 65536


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, read from /proc (for trees without a pid namespace)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class LocalProcess(Process):
    """A host process started in its own session (so its whole group can be killed).

    Pipes are non-blocking and read when the event loop says they are readable; the exit is
    awaited on a pidfd. Nothing here needs a helper thread per process.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        max_output_bytes: int,
        deadline: float | None,
        pidfile: Path,
        check_sandbox: Callable[[], None],
        cgroup: SandboxCgroup,
    ) -> None:
        """``check_sandbox`` raises ``SandboxGone`` if the sandbox was terminated; it is
        asked once the process has ended, so a kill by ``terminate`` is not taken for an
        ordinary exit. ``cgroup`` is the command's own group: ``kill`` empties it."""
        super().__init__(max_output_bytes=max_output_bytes, deadline=deadline)
        self._proc = proc
        self._check_sandbox = check_sandbox
        self._pidfile = pidfile
        self._cgroup = cgroup
        self._pidfd = os.pidfd_open(proc.pid)
        self._open: dict[Literal["stdout", "stderr"], int] = {}
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            self._open[name] = pipe.fileno()  # type: ignore[index]
        self._stdin: int | None = None
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            self._stdin = proc.stdin.fileno()
        self._exit: int | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _try_read(self) -> OutputChunk | None:
        """Read from whichever pipe has data now; drop pipes at EOF."""
        for name, fd in list(self._open.items()):
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                continue
            if data:
                return OutputChunk(stream=name, data=data)
            del self._open[name]
            closing = self._proc.stdout if name == "stdout" else self._proc.stderr
            assert closing is not None
            closing.close()
        return None

    async def _read(self) -> OutputChunk | None:
        while self._open:
            chunk = self._try_read()
            if chunk is not None:
                return chunk
            if not self._open:
                break
            # Wait until either pipe is readable; waiting consumes nothing, so a cancelled
            # wait loses no data.
            async with anyio.create_task_group() as tg:
                for fd in self._open.values():
                    tg.start_soon(self._wake_on_readable, fd, tg.cancel_scope)
        return None

    @staticmethod
    async def _wake_on_readable(fd: int, scope: anyio.CancelScope) -> None:
        await anyio.wait_readable(fd)
        scope.cancel()

    async def _wait_exit(self) -> int:
        if self._exit is None:
            if self._proc.poll() is None:
                await anyio.wait_readable(self._pidfd)
            code = self._proc.wait()
            self._exit = 128 - code if code < 0 else code
            self._pidfile.unlink(missing_ok=True)
            self._cgroup.discard()
            os.close(self._pidfd)
            await self._close_stdin()  # release the pipe now, not when collected
        self._check_sandbox()
        return self._exit

    async def _write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stdin is None:
                raise BrokenPipeError("stdin is closed")
            try:
                view = view[os.write(self._stdin, view) :]
            except BlockingIOError:
                await anyio.wait_writable(self._stdin)
            except BrokenPipeError:
                await self._close_stdin()
                raise

    async def _close_stdin(self) -> None:
        if self._stdin is not None and self._proc.stdin is not None:
            self._stdin = None
            self._proc.stdin.close()

    async def kill(self) -> None:
        """Kill the command's whole tree: its process group, its descendants, and (where
        the sandbox has a cgroup) every process it started, even one that double-forked
        out of both, including after the command itself has exited."""
        if self._exit is not None or self._proc.poll() is not None:
            await anyio.to_thread.run_sync(self._cgroup.kill)
            return
        stray = descendants(self._proc.pid)
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in stray:  # children that left the process group with setsid()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await anyio.to_thread.run_sync(self._cgroup.kill)  # and those that double-forked away
        with anyio.CancelScope(shield=True):
            await self._wait_exit()
