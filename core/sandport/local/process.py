"""A command running under the local provider: a host process (usually ``bwrap``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Literal

import anyio
from anyio.abc import ByteReceiveStream
from anyio.abc import Process as AnyioProcess

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
    """Wraps an anyio subprocess started in its own session (so its group can be killed)."""

    def __init__(self, proc: AnyioProcess, *, max_output_bytes: int, deadline: float | None, pidfile: Path) -> None:
        super().__init__(max_output_bytes=max_output_bytes, deadline=deadline)
        self._proc = proc
        self._pidfile = pidfile
        self._open: dict[Literal["stdout", "stderr"], ByteReceiveStream] = {}
        if proc.stdout is not None:
            self._open["stdout"] = proc.stdout
        if proc.stderr is not None:
            self._open["stderr"] = proc.stderr
        self._exit: int | None = None
        self._carry: OutputChunk | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def _read(self) -> OutputChunk | None:
        # Wait on both pipes at once; the first to deliver wins, the other read is cancelled
        # before it takes any data (anyio's stream reads are cancellation-safe).
        if self._carry is not None:
            carried, self._carry = self._carry, None
            return carried
        while self._open:
            got: list[OutputChunk | Literal["stdout", "stderr"]] = []

            async def pull(
                name: Literal["stdout", "stderr"],
                stream: ByteReceiveStream,
                got: list[OutputChunk | Literal["stdout", "stderr"]] = got,
            ) -> None:
                try:
                    data = await stream.receive(_READ_SIZE)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    got.append(name)
                else:
                    got.append(OutputChunk(stream=name, data=data))
                tg.cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                for name, stream in self._open.items():
                    tg.start_soon(pull, name, stream)
            chunk: OutputChunk | None = None
            for item in got:
                if isinstance(item, str):
                    self._open.pop(item, None)
                elif chunk is None:
                    chunk = item
                else:  # both pipes delivered in the same turn: keep the second for next time
                    self._carry = item
            if chunk is not None:
                return chunk
        return None

    async def _wait_exit(self) -> int:
        if self._exit is None:
            code = await self._proc.wait()
            self._exit = 128 - code if code < 0 else code
            self._pidfile.unlink(missing_ok=True)
            with anyio.CancelScope(shield=True):  # release the pipe now, not when collected
                await self._close_stdin()
        return self._exit

    async def _write_stdin(self, data: bytes) -> None:
        if self._proc.stdin is None:
            raise BrokenPipeError("stdin is closed")
        try:
            await self._proc.stdin.send(data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise BrokenPipeError("stdin is closed") from exc

    async def _close_stdin(self) -> None:
        if self._proc.stdin is not None:
            await self._proc.stdin.aclose()

    async def kill(self) -> None:
        if self._proc.returncode is not None:
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
        with anyio.CancelScope(shield=True):
            await self._wait_exit()
