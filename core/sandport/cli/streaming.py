"""Running a command with its output streamed live, our stdin forwarded, and signals handled.

Output chunks are written to our own stdout/stderr as the sandbox produces them. When our
stdin is not a terminal it is forwarded to the command (a pipe or a file: ``sandport run --
wc -l < data``); a terminal is not forwarded, the command reads EOF at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from sandport.cli.errors import Interrupted
from sandport.cli.output import write_output
from sandport.models import ExecResult, OutputChunk
from sandport.process import TIMEOUT_EXIT_CODE, Process
from sandport.sandbox import Sandbox

__all__ = ["interruptible", "stream_command"]

T = TypeVar("T")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_STDIN_CHUNK = 65536
#: After a timeout kill, how long to keep copying output that is still in the pipes.
_DRAIN_AFTER_KILL = 2.0
_PIPE_ERRORS = (BrokenPipeError, ConnectionResetError, anyio.BrokenResourceError, anyio.ClosedResourceError)

Sink = Callable[[OutputChunk], None]


async def interruptible(body: Callable[[], Awaitable[T]]) -> T:
    """Run ``body`` so that Ctrl-C (or SIGTERM/SIGHUP) cancels it instead of killing us.

    ``body`` runs its own (shielded) cleanup on cancellation: kill the command, terminate
    the sandbox. Then :class:`Interrupted` is raised. Further signals during cleanup are
    ignored so that the cleanup finishes.
    """
    received: list[int] = []
    work = anyio.CancelScope()

    async def watch(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with contextlib.ExitStack() as stack:
            try:
                signals = stack.enter_context(anyio.open_signal_receiver(*_SIGNALS))
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals
                task_status.started()
                return
            task_status.started()
            async for signum in signals:
                if not received:
                    received.append(signum)
                    work.cancel()

    results: list[T] = []
    async with anyio.create_task_group() as tg:
        await tg.start(watch)
        try:
            with work:
                results.append(await body())
        finally:
            tg.cancel_scope.cancel()
    if received:
        raise Interrupted(received[0])
    return results[0]


def _stdin_reader() -> Callable[[], bytes] | None:
    """A blocking function returning the next piece of our stdin (b"" at EOF), or None when
    stdin should not be forwarded (a terminal, or no stdin at all)."""
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        return None
    try:
        if stdin.isatty():
            return None
    except ValueError:
        return None
    try:
        fd = stdin.fileno()
    except (OSError, ValueError, AttributeError):  # a test runner's in-memory stdin
        buffer: Any = getattr(stdin, "buffer", None)
        if buffer is None:
            return lambda: stdin.read(_STDIN_CHUNK).encode()
        return lambda: bytes(buffer.read(_STDIN_CHUNK))

    def read_fd() -> bytes:
        try:
            return os.read(fd, _STDIN_CHUNK)
        except OSError:
            return b""

    return read_fd


async def forward_stdin(proc: Process) -> None:
    """Copy our stdin to the process until EOF, then close its stdin.

    Reads happen in a daemon thread: a read blocked on a pipe that never closes must not keep
    the CLI alive after the command finished.
    """
    reader = _stdin_reader()
    if reader is None:
        await proc.close_stdin()
        return
    send, receive = anyio.create_memory_object_stream[bytes](4)
    token = anyio.lowlevel.current_token()

    def pump() -> None:
        try:
            while True:
                data = reader()
                anyio.from_thread.run(send.send, data, token=token)
                if not data:
                    return
        except Exception:  # the loop ended, or the receiver went away: nothing left to feed
            return

    threading.Thread(target=pump, name="sandport-stdin", daemon=True).start()
    try:
        with receive:
            async for data in receive:
                if not data:
                    break
                try:
                    await proc.write_stdin(data)
                except _PIPE_ERRORS:
                    break  # the command closed its stdin or exited; `cmd < file` behaves the same
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await proc.close_stdin()
            except _PIPE_ERRORS:
                pass


async def stream_command(
    sandbox: Sandbox,
    argv: list[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    sink: Sink | None = None,
) -> ExecResult:
    """Start ``argv`` and pass each output chunk to ``sink`` as it arrives.

    Returns:
        The ExecResult (output capped as usual). On timeout the process tree is killed and
        the result has ``timed_out=True`` and exit code 124. If we are cancelled (Ctrl-C),
        the process is killed before the cancellation propagates.
    """
    emit = sink or (lambda chunk: None)
    proc = await sandbox.start(argv, cwd=cwd, env=env)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward_stdin, proc)
            result: ExecResult | None = None
            with anyio.move_on_after(timeout) as scope:
                async for chunk in proc:
                    emit(chunk)
                result = await proc.wait()
            if result is None or scope.cancelled_caught:
                await proc.kill()
                with anyio.move_on_after(_DRAIN_AFTER_KILL):
                    async for chunk in proc:
                        emit(chunk)
                killed = await proc.wait(timeout=_DRAIN_AFTER_KILL)
                result = killed.model_copy(update={"exit_code": TIMEOUT_EXIT_CODE, "timed_out": True})
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await proc.kill()
            # Read the pipes to EOF so the process's transport is released before the event
            # loop closes (after a broken pipe or Ctrl-C nothing else would).
            with anyio.move_on_after(_DRAIN_AFTER_KILL):
                await proc.wait()
    assert result is not None
    return result


def terminal_sink(chunk: OutputChunk) -> None:
    """Write a chunk to our own stdout or stderr, matching the stream it came from."""
    write_output(chunk.stream, chunk.data)
