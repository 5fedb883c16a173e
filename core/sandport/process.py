"""A command running in a sandbox: the :class:`Process` contract.

Providers implement four primitives (``_read``, ``_wait_exit``, ``_write_stdin``,
``_close_stdin``) plus ``kill``; the base class turns them into the public API: an async
iterator of output chunks, ``wait(timeout)`` with partial output on timeout, and bounded
memory whatever the command prints.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import anyio

from sandport.models import ExecResult, OutputChunk

__all__ = ["TIMEOUT_EXIT_CODE", "OutputCollector", "Process"]

#: ``ExecResult.exit_code`` of a command killed by its timeout (as GNU ``timeout`` does).
TIMEOUT_EXIT_CODE = 124
#: How long to keep reading already-buffered output after a timeout kill.
_DRAIN_AFTER_KILL = 2.0


class OutputCollector:
    """Keeps at most ``limit`` bytes per stream and remembers whether anything was dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffers = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False

    def add(self, chunk: OutputChunk) -> None:
        buf = self.buffers[chunk.stream]
        room = self.limit - len(buf)
        if len(chunk.data) > room:
            self.truncated = True
        if room > 0:
            buf += chunk.data[:room]

    def result(self, exit_code: int, *, timed_out: bool, duration: float) -> ExecResult:
        return ExecResult(
            exit_code=exit_code,
            stdout=bytes(self.buffers["stdout"]),
            stderr=bytes(self.buffers["stderr"]),
            timed_out=timed_out,
            truncated=self.truncated,
            duration=duration,
        )


class Process(ABC):
    """A command started with ``Sandbox.start``.

    Use it by iterating its output, then waiting::

        proc = await sandbox.start(["python3", "-u", "serve.py"])
        async for chunk in proc:          # OutputChunk(stream="stdout"|"stderr", data=b"...")
            ...
        result = await proc.wait()        # ExecResult with everything printed (capped)

    Iterating is optional: ``wait()`` drains what is left. The ``ExecResult`` holds all the
    output either way, up to the cap. Iterate and wait from one task at a time.
    """

    def __init__(self, *, max_output_bytes: int, deadline: float | None = None) -> None:
        """
        Args:
            max_output_bytes: cap per stream for the collected ``ExecResult``.
            deadline: a ``time.monotonic()`` instant after which ``wait`` treats the process
                as timed out even without a timeout argument (the sandbox's lifetime).
        """
        self._collector = OutputCollector(max_output_bytes)
        self._started = time.monotonic()
        self._deadline = deadline
        self._eof = False
        self._result: ExecResult | None = None

    # -- what a provider implements -------------------------------------------------------

    @abstractmethod
    async def _read(self) -> OutputChunk | None:
        """Return the next output chunk in arrival order, or ``None`` once both stdout and
        stderr reached EOF. Must be cancellation-safe: a cancelled call loses no data."""

    @abstractmethod
    async def _wait_exit(self) -> int:
        """Wait for the process to exit and return its exit status (128+N for signal N)."""

    @abstractmethod
    async def _write_stdin(self, data: bytes) -> None:
        """Write to the process's stdin; raise ``BrokenPipeError`` if it is closed."""

    @abstractmethod
    async def _close_stdin(self) -> None:
        """Close stdin so the process sees EOF. Idempotent."""

    @abstractmethod
    async def kill(self) -> None:
        """Kill the process and every process it started (the whole tree or group).

        Idempotent, and a no-op once the process has exited. Output already produced stays
        readable through ``wait()``.
        """

    # -- the public API -------------------------------------------------------------------

    async def write_stdin(self, data: bytes | str) -> None:
        """Send ``data`` (str is encoded as UTF-8) to the process's stdin.

        Raises:
            BrokenPipeError: stdin was closed, or the process no longer reads it.
        """
        await self._write_stdin(data.encode() if isinstance(data, str) else data)

    async def close_stdin(self) -> None:
        """Close stdin; the process reads EOF. Safe to call more than once."""
        await self._close_stdin()

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[OutputChunk]:
        while not self._eof:
            chunk = await self._read()
            if chunk is None:
                self._eof = True
                return
            self._collector.add(chunk)
            yield chunk

    async def _drain(self) -> None:
        async for _ in self._chunks():
            pass

    def _remaining(self, timeout: float | None) -> float | None:
        if self._deadline is None:
            return timeout
        left = max(0.0, self._deadline - time.monotonic())
        return left if timeout is None else min(timeout, left)

    async def wait(self, timeout: float | None = None) -> ExecResult:
        """Wait for the process to exit and return its result.

        Args:
            timeout: seconds to wait, counted from now. On expiry the whole process tree is
                killed and the result has ``timed_out=True``, exit code ``124`` and all the
                output read until then. ``None`` waits for as long as the sandbox lives.

        Returns:
            The :class:`ExecResult`; calling ``wait`` again returns the same result.

        Raises:
            SandboxGone: the sandbox was terminated or died while the command ran (a
                provider must detect this and raise, never hang or invent an exit code).
        """
        if self._result is not None:
            return self._result
        timed_out = False
        exit_code = TIMEOUT_EXIT_CODE
        with anyio.move_on_after(self._remaining(timeout)) as scope:
            await self._drain()
            exit_code = await self._wait_exit()
        if scope.cancelled_caught:
            timed_out = True
            await self.kill()
            with anyio.move_on_after(_DRAIN_AFTER_KILL):
                await self._drain()
        duration = time.monotonic() - self._started
        self._result = self._collector.result(exit_code, timed_out=timed_out, duration=duration)
        return self._result
