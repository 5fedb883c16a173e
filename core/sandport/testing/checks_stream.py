"""start(): output as it arrives, in order; stdin; kill; wait."""

from __future__ import annotations

import anyio
import pytest

from sandport.capabilities import Capability
from sandport.models import OutputChunk
from sandport.process import Process
from sandport.sandbox import Sandbox
from sandport.testing._support import py, requires
from sandport.testing.base import ConformanceBase
from sandport.testing.checks_timeout import GROWER, assert_stops_growing

__all__ = ["StreamChecks"]


async def read_until(proc: Process, stream: str, needle: bytes, limit: float) -> bytes:
    """Iterate ``proc`` until ``stream`` holds ``needle``; fail after ``limit`` seconds."""
    seen = b""
    with anyio.fail_after(limit):
        async for chunk in proc:
            if chunk.stream == stream:
                seen += chunk.data
                if needle in seen:
                    return seen
    raise AssertionError(f"{stream} ended without {needle!r}; got {seen!r}")


def runs(chunks: list[OutputChunk]) -> list[tuple[str, bytes]]:
    """Consecutive chunks of one stream joined: [(stream, data), ...]."""
    merged: list[tuple[str, bytes]] = []
    for chunk in chunks:
        if merged and merged[-1][0] == chunk.stream:
            merged[-1] = (chunk.stream, merged[-1][1] + chunk.data)
        else:
            merged.append((chunk.stream, chunk.data))
    return merged


class StreamChecks(ConformanceBase):
    @requires(Capability.STREAMING)
    async def test_stream_chunks_in_order(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(py("import time\nfor i in range(5):\n    print(i, flush=True); time.sleep(0.05)"))
        chunks = [c async for c in proc]
        assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"0\n1\n2\n3\n4\n"

    @requires(Capability.STREAMING)
    async def test_stream_interleaves_stdout_and_stderr(self, sandbox: Sandbox) -> None:
        code = """
            import sys, time
            for stream, text in [(sys.stdout, "A"), (sys.stderr, "B"), (sys.stdout, "C"), (sys.stderr, "D")]:
                stream.write(text + "\\n"); stream.flush(); time.sleep(0.4)
            """
        proc = await sandbox.start(py(code))
        chunks = [c async for c in proc]
        expected = [("stdout", b"A\n"), ("stderr", b"B\n"), ("stdout", b"C\n"), ("stderr", b"D\n")]
        assert runs(chunks) == expected

    @requires(Capability.STREAMING)
    async def test_stream_first_chunk_before_exit(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(py("import time; print('ready', flush=True); time.sleep(120)"))
        try:
            # The command sleeps for two minutes: seeing its output sooner proves streaming.
            assert b"ready" in await read_until(proc, "stdout", b"ready", limit=self.slack)
        finally:
            await proc.kill()
        result = await proc.wait(timeout=self.slack)
        assert result.exit_code != 0
        assert result.stdout == b"ready\n"

    @requires(Capability.STREAMING, Capability.STDIN)
    async def test_stream_stdin_round_trip(self, sandbox: Sandbox) -> None:
        code = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\nprint('eof')"
        proc = await sandbox.start(py(code))
        await proc.write_stdin(b"ping\n")
        assert await read_until(proc, "stdout", b"PING\n", limit=self.slack) == b"PING\n"
        await proc.write_stdin("pong\n")
        assert await read_until(proc, "stdout", b"PONG\n", limit=self.slack) == b"PONG\n"
        await proc.close_stdin()
        await proc.close_stdin()  # idempotent
        result = await proc.wait(timeout=self.slack)
        assert result.exit_code == 0
        assert result.stdout == b"PING\nPONG\neof\n"

    @requires(Capability.STREAMING)
    async def test_kill_kills_the_tree(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(["sh", "-c", f"echo started; {GROWER}"])
        await read_until(proc, "stdout", b"started", limit=self.slack)
        await anyio.sleep(0.5)
        await proc.kill()
        await proc.kill()  # idempotent
        with anyio.fail_after(self.slack):
            result = await proc.wait()
        assert result.exit_code != 0
        await assert_stops_growing(sandbox, "grow.log")

    @requires(Capability.STREAMING)
    async def test_wait_after_iteration_returns_full_output(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start("for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 5")
        chunks = [c async for c in proc]
        result = await proc.wait(timeout=self.slack)
        assert result.exit_code == 5
        assert result.stdout == b"out1\nout2\nout3\n" == b"".join(c.data for c in chunks if c.stream == "stdout")
        assert result.stderr == b"err1\nerr2\nerr3\n"
        assert await proc.wait() == result

    @requires(Capability.STREAMING)
    async def test_wait_without_iterating(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(py("import sys; sys.stdout.write('z' * 300000); sys.stderr.write('done')"))
        result = await proc.wait(timeout=self.slack)
        assert result.stdout == b"z" * 300000
        assert result.stderr == b"done"

    @requires(Capability.STREAMING)
    async def test_wait_timeout_kills_and_keeps_output(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(py("import time; print('partial', flush=True); time.sleep(120)"))
        result = await proc.wait(timeout=2.5)
        assert result.timed_out
        assert result.exit_code == 124
        assert result.stdout == b"partial\n"

    @requires(Capability.STREAMING)
    async def test_start_missing_program_is_exit_127(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(["sandport-no-such-program"])
        assert (await proc.wait(timeout=self.slack)).exit_code == 127

    @requires(Capability.STREAMING)
    async def test_start_cwd_and_env(self, sandbox: Sandbox) -> None:
        await sandbox.mkdir("there")
        proc = await sandbox.start(
            py("import os; print(os.getcwd(), os.environ['SP_X'])"), cwd="there", env={"SP_X": "y"}
        )
        result = await proc.wait(timeout=self.slack)
        assert result.text == f"{sandbox.spec.workdir.rstrip('/')}/there y\n"

    @requires(Capability.STREAMING, Capability.STDIN)
    async def test_write_stdin_after_close_or_exit_is_broken_pipe(self, sandbox: Sandbox) -> None:
        proc = await sandbox.start(["cat"])
        await proc.close_stdin()
        with pytest.raises(BrokenPipeError):
            await proc.write_stdin(b"late")
        assert (await proc.wait(timeout=self.slack)).exit_code == 0
        done = await sandbox.start(["true"])
        await done.wait(timeout=self.slack)
        with pytest.raises(BrokenPipeError):
            await done.write_stdin(b"x" * (1024 * 1024))
