"""A command running in a container: one exec instance on a hijacked engine stream.

Every command runs under a tiny ``/bin/sh`` wrapper that changes to the working directory,
prints its own pid on the first line of stdout, then ``exec``\\ s the command. The engine makes
each exec process a session (and process group) leader, so that pid is the session and
process group of everything the command starts. Each exec also gets a random
:data:`MARKER` in its environment, which every descendant inherits, whatever ``setsid`` or
double forks it goes through. A timeout or ``kill()`` kills, from a second exec, everything
in that session or group, every descendant, and every process carrying the marker (a
program that clears its own environment and leaves the session can escape this; it cannot
escape ``terminate``). The first line is consumed here and never reaches the caller; a
missing program makes the wrapper's ``exec`` fail with status 127, as in any shell.

If the wrapper never speaks, the engine could not start the process at all and whatever it
printed in its place is its own error, never the command's output: the handshake raises
:class:`StartRefused` with that text, for the sandbox to turn into ``SandboxGone`` or a
``ProviderError``.

Output comes multiplexed on one stream: 8-byte frame headers (stream type, 3 zero bytes,
big-endian length) before each payload. :class:`DockerProcess` demultiplexes it itself, so
stdout and stderr stay apart and arrive in the order the engine wrote them.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import TYPE_CHECKING, Literal

import anyio
from anyio.abc import ByteStream

from sandport.models import OutputChunk
from sandport.process import Process

if TYPE_CHECKING:
    from sandport_docker.sandbox import DockerSandbox

__all__ = ["KILL_SCRIPT", "MARKER", "DockerProcess", "StartRefused", "wrap"]

_READ_SIZE = 256 * 1024
#: How much of what the engine printed in place of the wrapper is kept for the error.
_REFUSAL_TEXT = 4096
#: Environment variable set to a random token in every exec; inherited by its descendants.
MARKER = "SANDPORT_EXEC"
# $1: working directory; the rest: the command. Prints "<pid>" or "!<errno name>" first.
# (Never /dev/null: a sandbox may delete it. A closed stderr silences `cd` just as well.)
_WRAPPER = (
    'cd -- "$1" 2>&- || { if [ ! -e "$1" ]; then echo "!ENOENT"; elif [ ! -d "$1" ]; then echo "!ENOTDIR"; '
    'else echo "!EACCES"; fi; exit 126; }; echo "$$"; shift; exec "$@"'
)
#: ``KILL_SCRIPT PID TOKEN``: SIGKILLs the session and process group PID, every process
#: whose environment carries ``MARKER=TOKEN`` (it survives setsid and double forks), and all
#: their descendants; repeated while a round still finds something (a forking process may
#: have made new children meanwhile). The marker is only readable for processes of the
#: killer's own user (reading another user's environment needs CAP_SYS_PTRACE), so this
#: runs as the command's user. Only shell builtins, and no ``exit``: it must also run
#: inline in the helper shell when the pids limit leaves no room for a new process.
KILL_SCRIPT = r"""
g=$1 t=$2 round=0
while [ $round -lt 8 ]; do
  round=$((round + 1)); tree=" "
  for s in /proc/[0-9]*/stat; do
    p=${s#/proc/}; p=${p%/stat}
    read -r line 2>&- < "$s" || continue
    set -- ${line##*) }
    if [ "$p" = "$g" ] || [ "$3" = "$g" ] || [ "$4" = "$g" ]; then tree="$tree$p "; continue; fi
    e=; read -r e 2>&- < "/proc/$p/environ"
    case $e in *"SANDPORT_EXEC=$t"*) tree="$tree$p " ;; esac
  done
  grew=1
  while [ $grew = 1 ]; do
    grew=0
    for s in /proc/[0-9]*/stat; do
      p=${s#/proc/}; p=${p%/stat}
      case $tree in *" $p "*) continue ;; esac
      read -r line 2>&- < "$s" || continue
      set -- ${line##*) }
      case $tree in *" $2 "*) tree="$tree$p "; grew=1 ;; esac
    done
  done
  [ "$tree" = " " ] && break
  kill -9 -"$g" 2>&-
  for p in $tree; do kill -9 "$p" 2>&-; done
done
"""
_CWD_ERRORS: dict[bytes, tuple[type[OSError], int]] = {
    b"!ENOENT": (FileNotFoundError, errno.ENOENT),
    b"!ENOTDIR": (NotADirectoryError, errno.ENOTDIR),
    b"!EACCES": (PermissionError, errno.EACCES),
}
_STREAMS: dict[int, Literal["stdout", "stderr"]] = {1: "stdout", 2: "stderr"}


def wrap(argv: list[str], cwd: str) -> list[str]:
    """The argv that runs ``argv`` in ``cwd`` under the pid-reporting wrapper."""
    return ["/bin/sh", "-c", _WRAPPER, "sh", cwd, *argv]


class StartRefused(Exception):
    """The exec started but the wrapper never ran: ``text`` is what came instead (the
    engine's error, say "OCI runtime exec failed: ..."), possibly empty."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class DockerProcess(Process):
    """An exec instance. Built by ``DockerSandbox._spawn``, which calls :meth:`_handshake`."""

    def __init__(
        self,
        sandbox: DockerSandbox,
        exec_id: str,
        stream: ByteStream,
        pending: bytes,
        *,
        cwd: str,
        stdin: bool,
        max_output_bytes: int,
        deadline: float | None,
        user: str = "",
        token: str = "",
    ) -> None:
        super().__init__(max_output_bytes=max_output_bytes, deadline=deadline)
        self._sandbox = sandbox
        self.exec_id = exec_id
        self.cwd = cwd
        #: The user the exec runs as ("" for the container's, root) and its MARKER token.
        self.user = user
        self.token = token
        self._stream = stream
        self._buffer = bytearray(pending)
        self._frame: Literal["stdout", "stderr"] | None = None
        self._frame_left = 0
        self._stream_eof = False
        self._ready: deque[OutputChunk] = deque()
        self._read_lock = anyio.Lock()  # kill() reads too, while someone else may iterate
        self._stdin_open = stdin
        self._exit: int | None = None
        self._closed = False
        self._killed = False
        #: The command's pid (= its process group) inside the container, once known.
        self.pid: int | None = None

    # -- the multiplexed stream -----------------------------------------------------------

    async def _next_frame_data(self) -> OutputChunk | None:
        """The next piece of a stdout/stderr frame, or None at the end of the stream.
        State changes only after ``receive`` returned, so cancelling loses nothing."""
        buffer = self._buffer
        while True:
            if self._frame_left and buffer:
                size = min(self._frame_left, len(buffer))
                data = bytes(buffer[:size])
                del buffer[:size]
                self._frame_left -= size
                assert self._frame is not None
                return OutputChunk(stream=self._frame, data=data)
            if not self._frame_left and len(buffer) >= 8:
                kind, size = buffer[0], int.from_bytes(buffer[4:8], "big")
                del buffer[:8]
                self._frame, self._frame_left = _STREAMS.get(kind, "stderr"), size
                continue
            if self._stream_eof:
                return None
            try:
                data = await self._stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                self._stream_eof = True
                continue
            buffer += data

    async def _handshake(self) -> None:
        """Read the wrapper's first line: the pid, or why it could not enter the cwd.

        Raises:
            StartRefused: anything else came first (or nothing at all): the wrapper never
                ran, and what came is the engine's, not the command's.
        """
        line = bytearray()
        other = bytearray()  # stderr before the pid line: the command cannot have written it yet
        while True:
            chunk = await self._next_frame_data()
            if chunk is None:
                raise await self._refusal(line + other)
            if chunk.stream == "stderr":
                if len(other) < _REFUSAL_TEXT:
                    other += chunk.data
                self._ready.append(chunk)
                continue
            line += chunk.data
            end = line.find(b"\n")
            if end < 0:
                if len(line) > 64:  # not the wrapper talking
                    raise await self._refusal(line + other)
                continue
            first, rest = bytes(line[:end]), bytes(line[end + 1 :])
            if first.isdigit():
                self.pid = int(first)
                if rest:
                    self._ready.append(OutputChunk(stream="stdout", data=rest))
                return
            if first in _CWD_ERRORS:
                cls, code = _CWD_ERRORS[first]
                raise cls(code, f"working directory: {errno.errorcode[code]}", self.cwd)
            raise await self._refusal(line + other)

    async def _refusal(self, seen: bytearray) -> StartRefused:
        """What the engine printed in place of the wrapper (the rest of it, briefly)."""
        text = bytearray(seen)
        with anyio.move_on_after(1):
            while len(text) < _REFUSAL_TEXT:
                chunk = await self._next_frame_data()
                if chunk is None:
                    break
                text += chunk.data
        return StartRefused(bytes(text[:_REFUSAL_TEXT]).decode("utf-8", "replace").strip())

    # -- Process primitives ---------------------------------------------------------------

    async def _read(self) -> OutputChunk | None:
        while True:
            if self._ready:
                return self._ready.popleft()
            async with self._read_lock:
                if not self._ready:  # (kill() may have queued some while we waited)
                    return await self._next_frame_data()

    async def _wait_exit(self) -> int:
        if self._exit is None:
            code = await self._sandbox._exec_exit_code(self.exec_id, killed_by_us=self._killed)
            self._exit = code
            await self.aclose()
        return self._exit

    async def _write_stdin(self, data: bytes) -> None:
        if not self._stdin_open:
            raise BrokenPipeError("stdin is closed")
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise BrokenPipeError(f"stdin is closed: {exc}") from None

    async def _close_stdin(self) -> None:
        if not self._stdin_open:
            return
        self._stdin_open = False
        try:
            await self._stream.send_eof()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, NotImplementedError):
            pass

    async def kill(self) -> None:
        """Kill the command's processes (see the module docstring), reading its output
        meanwhile: the engine handles a container's exits one at a time and finishes one
        only once its output is read, so an unread command would hold up the killer's."""
        if self._exit is not None or self.pid is None:
            return
        self._killed = True
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_reading)
                await self._sandbox._kill_group(self.pid, self.token, self.user)
                group.cancel_scope.cancel()

    async def _keep_reading(self) -> None:
        """Queue the output for later readers, keeping at most the cap (per stream) of it."""
        kept = {"stdout": 0, "stderr": 0}
        while True:
            async with self._read_lock:
                chunk = await self._next_frame_data()
            if chunk is None:
                return
            if kept[chunk.stream] < self._collector.limit:
                kept[chunk.stream] += len(chunk.data)
                self._ready.append(chunk)

    async def aclose(self) -> None:
        """Drop the connection (the command keeps running unless killed)."""
        if not self._closed:
            self._closed = True
            self._stdin_open = False
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
