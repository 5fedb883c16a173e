"""A shell kept open in each sandbox for sandport's own small jobs.

Listing a directory, removing a path and the rename that makes ``write_file`` atomic have no
archive-API counterpart. A fresh exec per job costs tens of milliseconds; this session runs
each job in a subshell of one long-lived ``/bin/sh`` in about a millisecond. Each job's
output is framed by a per-session sentinel carrying its exit status (on stdout) and a
matching sentinel on stderr, as :class:`sandport.shell.Shell` does. Jobs run in ``/`` as
root, or, in the session a sandbox with a non-root default user keeps for its file
operations, as that user.

What a job prints comes from the sandbox, which may have replaced the tools a script calls:
each job's output is capped (:data:`OUTPUT_LIMIT` unless the caller says otherwise); a job
that prints more is killed with its session and raises ``ProviderError``. Nothing here reads
``/dev/null``, which the sandbox may have removed: a job's stdin is an empty here-document.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import anyio

from sandport.errors import ProviderError
from sandport.models import OutputChunk
from sandport.process import OutputCollector
from sandport.shell import SentinelFraming
from sandport_docker.engine import NAME
from sandport_docker.process import DockerProcess

if TYPE_CHECKING:
    from sandport_docker.sandbox import DockerSandbox

__all__ = ["OUTPUT_LIMIT", "HelperResult", "HelperSession"]

#: The most a job may print on each stream unless the caller says otherwise.
OUTPUT_LIMIT = 16 * 1024 * 1024
#: The helpers' environment: untranslated messages, which the callers match on.
ENV = {"LC_ALL": "C"}
_EMPTY = "SANDPORT_EMPTY_STDIN"


class HelperResult:
    """What one job printed, and its exit status."""

    def __init__(self, exit_code: int, stdout: bytes, stderr: bytes) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class _OverLimit(Exception):
    pass


class _CappedCollector(OutputCollector):
    def add(self, chunk: OutputChunk) -> None:
        super().add(chunk)
        if self.truncated:
            raise _OverLimit


class HelperSession:
    """One ``/bin/sh`` reading jobs from its stdin; restarted if it dies.

    Args:
        user: who the shell runs as (default root).
    """

    def __init__(self, sandbox: DockerSandbox, user: str = "0") -> None:
        self._sandbox = sandbox
        self._user = user
        self._process: DockerProcess | None = None
        self._lock = anyio.Lock()
        self._framing = SentinelFraming("SANDPORT_HELPER")

    @property
    def started(self) -> bool:
        return self._process is not None

    async def run(self, script: str, *args: str, inline: bool = False, limit: int = OUTPUT_LIMIT) -> HelperResult:
        """Run ``script`` with ``args`` as ``$1``... in a subshell whose stdin is empty.

        ``inline`` runs it in the session's shell itself, without forking: for a script of
        builtins only (no ``exit``) that must work when the pids limit is exhausted. Such a
        script runs only in a session that is already up.

        Raises:
            ProviderError: the job printed more than ``limit`` bytes on a stream (it is
                killed with the session), or the session cannot be kept running.
            SandboxGone: the sandbox is gone.
        """
        quoted = " ".join(shlex.quote(a) for a in args)
        body = f"set -- {quoted}\n{script}\n" if inline else f"(set -- {quoted}\n{script}\n) <<'{_EMPTY}'\n{_EMPTY}\n"
        job = self._framing.job(body)
        async with self._lock:
            for attempt in (1, 2):
                process = self._process
                if process is None and inline:
                    raise ProviderError(NAME, "the helper shell is not running")
                if process is None:
                    process = self._process = await self._sandbox._spawn(
                        ["/bin/sh"], cwd="/", env=ENV, user=self._user, stdin=True
                    )
                    self._framing.reset()
                try:
                    await process.write_stdin(job)
                    result = await self._collect(process, limit)
                except BrokenPipeError:
                    result = None
                except _OverLimit:
                    self._process = None
                    await self._discard(process)
                    raise ProviderError(
                        NAME,
                        f"sandport's helper in sandbox {self._sandbox.id} printed more than {limit} bytes "
                        "(has the sandbox replaced a system tool?); the job was killed",
                    ) from None
                except BaseException:  # cancelled mid-job: its output would confuse the next one
                    self._process = None
                    await self._discard(process)
                    raise
                if result is not None:
                    return result
                # The session died (killed from inside, or the container is going away).
                self._process = None
                await process.aclose()
                if attempt == 2:
                    problem = await self._sandbox._state_problem()
                    if problem:
                        raise self._sandbox._gone(problem)
            raise ProviderError(NAME, f"sandport's helper shell in {self._sandbox.id} keeps dying")

    async def _collect(self, process: DockerProcess, limit: int) -> HelperResult | None:
        collector = _CappedCollector(limit)
        code = await self._framing.collect(process, collector)
        if code is None:
            return None
        return HelperResult(code, bytes(collector.buffers["stdout"]), bytes(collector.buffers["stderr"]))

    @staticmethod
    async def _discard(process: DockerProcess) -> None:
        """Kill a session that is in the middle of a job (and whatever the job started).
        Its connection is dropped first: the engine handles a container's exits one at a
        time, and waits for the output of an exited exec to be read before the next."""
        with anyio.CancelScope(shield=True):
            await process.aclose()
            with anyio.move_on_after(30):
                await process.kill()

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                await process.aclose()
