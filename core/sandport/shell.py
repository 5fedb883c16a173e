"""A persistent shell on any provider, built on :class:`~sandport.process.Process`.

One long-lived ``bash`` (or ``sh``) reads commands from its stdin. Each command is sent as
``eval '<command>' </dev/null`` followed by a sentinel line carrying the exit status, echoed
on both stdout and stderr, so each command's output and status are framed exactly. Because
``eval`` runs in the shell itself, ``cd``, ``export`` and background jobs persist.

On timeout the generic shell cannot interrupt just the command, so it kills the shell and
starts a fresh one; the result says so with ``restarted=True`` (cwd, env and jobs are lost).
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import time
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from sandport.errors import SandboxGone
from sandport.models import OutputChunk, ShellResult
from sandport.process import TIMEOUT_EXIT_CODE, OutputCollector, Process

if TYPE_CHECKING:
    from sandport.sandbox import Sandbox

__all__ = ["SentinelFraming", "Shell"]

_BOOT = "if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc; else exec sh; fi"


class SentinelFraming:
    """Frames jobs sent to a long-lived shell: each job is followed by a sentinel line with
    its exit status on stdout and a matching one on stderr, so a reader knows where each
    job's output ends on both streams. Output after the last sentinel is held for the next
    job; the newline printed before each sentinel is not part of the job's output.
    """

    def __init__(self, name: str = "SANDPORT") -> None:
        token = secrets.token_hex(8)
        self._markers = {s: f"__{name}_{token}_{s}__" for s in ("stdout", "stderr")}
        # What a reader looks for: the newline printed before each sentinel, then the sentinel.
        self._needles = {s: b"\n" + m.encode() for s, m in self._markers.items()}
        self._pending = {"stdout": b"", "stderr": b""}

    def job(self, body: str) -> bytes:
        """``body`` (shell source ending in a newline) followed by the two sentinels.
        Surrogate-escaped characters (from ``os.fsdecode``) become their original bytes, so
        file names that are not UTF-8 reach the shell intact."""
        out, err = self._markers["stdout"], self._markers["stderr"]
        return f"{body}printf '\\n{out}%d\\n' \"$?\"; printf '\\n{err}\\n' >&2\n".encode("utf-8", "surrogateescape")

    def reset(self) -> None:
        """Forget held-back output (after the shell was replaced)."""
        self._pending = {"stdout": b"", "stderr": b""}

    async def collect(self, process: Process, collector: OutputCollector) -> int | None:
        """Read one job's output into ``collector``; return its exit status, or None if the
        shell ended first (what it printed so far is then in ``collector``)."""
        code: int | None = None
        done = {"stdout": False, "stderr": False}
        while not all(done.values()):
            chunk = await process._read()
            if chunk is None:
                self.flush(collector)
                return None
            stream = chunk.stream
            data = self._pending[stream] + chunk.data
            marker = self._needles[stream]
            at = data.find(marker)
            if at < 0:
                # Keep back a tail that could be the start of the marker.
                keep = len(marker) + 16
                emit, self._pending[stream] = data[:-keep] if len(data) > keep else b"", data[-keep:]
                if emit:
                    collector.add(OutputChunk(stream=stream, data=emit))
                continue
            collector.add(OutputChunk(stream=stream, data=data[:at]))
            rest = data[at + len(marker) :]
            end = rest.find(b"\n")
            if end < 0:  # the rest of the sentinel line has not arrived yet
                self._pending[stream] = data[at:]
                continue
            if stream == "stdout":
                code = int(rest[:end] or b"0")
            self._pending[stream] = rest[end + 1 :]
            done[stream] = True
        return code

    def flush(self, collector: OutputCollector) -> None:
        """Hand the output held back while looking for a sentinel to ``collector``."""
        for stream, rest in self._pending.items():
            if rest and not rest.startswith(self._needles[stream]):
                collector.add(OutputChunk(stream=stream, data=rest))  # type: ignore[arg-type]
        self.reset()


class Shell:
    """A persistent shell session. Get one with ``await sandbox.open_shell()``."""

    def __init__(self, sandbox: Sandbox, process: Process) -> None:
        self._sandbox = sandbox
        self._process = process
        self._framing = SentinelFraming()
        self._lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, sandbox: Sandbox) -> Shell:
        """Start the shell process in the sandbox's workdir with the sandbox's env."""
        return cls(sandbox, await cls._spawn(sandbox))

    @staticmethod
    async def _spawn(sandbox: Sandbox) -> Process:
        env = {**sandbox.spec.env, **sandbox.spec.secret_env()}
        return await sandbox._start(["/bin/sh", "-c", _BOOT], cwd=sandbox.spec.workdir, env=env, user=None)

    async def run(self, command: str, *, timeout: float | None = None) -> ShellResult:
        """Run one command line in the shell and return its own exit code and output.

        Args:
            command: shell source; may span lines. Its stdin is ``/dev/null``.
            timeout: seconds; on expiry the shell is restarted and the result has
                ``timed_out=True``, ``restarted=True`` and the partial output.

        Raises:
            SandboxGone: the sandbox is gone (the shell died and cannot be restarted).
        """
        async with self._lock:
            if self._closed:
                raise RuntimeError("this shell is closed; open a new one with sandbox.open_shell()")
            async with self._sandbox._operation("shell_run", command=command) as op:
                result = await self._run(command, timeout)
                op.update(exit_code=result.exit_code, timed_out=result.timed_out, restarted=result.restarted)
            return result

    async def _run(self, command: str, timeout: float | None) -> ShellResult:
        """Send one framed command and read its output; restart the shell if needed."""
        started = time.monotonic()
        collector = OutputCollector(self._sandbox.spec.max_output_bytes)
        try:
            await self._process.write_stdin(self._framing.job(f"eval {shlex.quote(command)} </dev/null\n"))
        except (BrokenPipeError, ConnectionResetError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return await self._restart(collector, started, timed_out=False)
        exit_code: int | None = None
        with anyio.move_on_after(timeout) as scope:
            exit_code = await self._framing.collect(self._process, collector)
        if scope.cancelled_caught:
            return await self._restart(collector, started, timed_out=True)
        if exit_code is None:  # the shell exited (say, the command ran `exit`)
            return await self._restart(collector, started, timed_out=False)
        result = collector.result(exit_code, timed_out=False, duration=time.monotonic() - started)
        return ShellResult(**result.model_dump())

    async def _restart(self, collector: OutputCollector, started: float, *, timed_out: bool) -> ShellResult:
        """Replace a dead or stuck shell; the result carries the old one's exit status."""
        if timed_out:
            await self._process.kill()
        exit_code = (await self._process.wait(timeout=5)).exit_code  # also reads its pipes to EOF
        if timed_out:
            exit_code = TIMEOUT_EXIT_CODE
        self._framing.flush(collector)
        try:
            self._process = await self._spawn(self._sandbox)
        except SandboxGone:
            self._closed = True
            raise
        result = collector.result(exit_code, timed_out=timed_out, duration=time.monotonic() - started)
        return ShellResult(**result.model_dump(), restarted=True)

    async def close(self) -> None:
        """End the shell and everything it started. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._process.kill()
            with contextlib.suppress(SandboxGone):  # nothing left to read from a dead sandbox
                await self._process.wait(timeout=5)  # read its pipes to EOF so they close now

    async def __aenter__(self) -> Shell:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()
