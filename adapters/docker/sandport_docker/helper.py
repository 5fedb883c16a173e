"""A root shell kept open in each sandbox for sandport's own small jobs.

Listing a directory, removing a path and the rename that makes ``write_file`` atomic have no
archive-API counterpart. A fresh exec per job costs tens of milliseconds; this session runs
each job in a subshell of one long-lived ``/bin/sh`` in about a millisecond. Each job's
output is framed by a per-session sentinel carrying its exit status (on stdout) and a
matching sentinel on stderr, as :class:`sandport.shell.Shell` does; unlike that shell the
output is not capped (it is sandport's own, not the user's) and jobs run as root in ``/``.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

import anyio

from sandport.errors import ProviderError
from sandport.process import OutputCollector
from sandport.shell import SentinelFraming
from sandport_docker.engine import NAME
from sandport_docker.process import DockerProcess

if TYPE_CHECKING:
    from sandport_docker.sandbox import DockerSandbox

__all__ = ["HelperResult", "HelperSession"]


class HelperResult:
    """What one job printed, and its exit status."""

    def __init__(self, exit_code: int, stdout: bytes, stderr: bytes) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class HelperSession:
    """One root ``/bin/sh`` reading jobs from its stdin; restarted if it dies."""

    def __init__(self, sandbox: DockerSandbox) -> None:
        self._sandbox = sandbox
        self._process: DockerProcess | None = None
        self._lock = anyio.Lock()
        self._framing = SentinelFraming("SANDPORT_HELPER")

    @property
    def started(self) -> bool:
        return self._process is not None

    async def run(self, script: str, *args: str, inline: bool = False) -> HelperResult:
        """Run ``script`` with ``args`` as ``$1``... in a subshell, stdin from /dev/null.

        ``inline`` runs it in the session's shell itself, without forking: for a script of
        builtins only (no ``exit``) that must work when the pids limit is exhausted. Such a
        script runs only in a session that is already up.
        """
        quoted = " ".join(shlex.quote(a) for a in args)
        body = f"set -- {quoted}\n{script}\n" if inline else f"(set -- {quoted}\n{script}\n) </dev/null\n"
        job = self._framing.job(body)
        async with self._lock:
            for attempt in (1, 2):
                process = self._process
                if process is None and inline:
                    raise ProviderError(NAME, "the helper shell is not running")
                if process is None:
                    process = self._process = await self._sandbox._spawn(
                        ["/bin/sh"], cwd="/", env={}, user="0", stdin=True
                    )
                    self._framing.reset()
                try:
                    await process.write_stdin(job)
                    result = await self._collect(process)
                except BrokenPipeError:
                    result = None
                except BaseException:  # cancelled mid-job: its output would confuse the next one
                    self._process = None
                    with anyio.CancelScope(shield=True):
                        await process.aclose()
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

    async def _collect(self, process: DockerProcess) -> HelperResult | None:
        collector = OutputCollector(sys.maxsize)  # sandport's own output: never capped
        code = await self._framing.collect(process, collector)
        if code is None:
            return None
        return HelperResult(code, bytes(collector.buffers["stdout"]), bytes(collector.buffers["stderr"]))

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                await process.aclose()
