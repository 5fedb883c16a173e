"""Timeouts: partial output, exit 124, the whole tree killed, the sandbox still usable."""

from __future__ import annotations

import time

import anyio

from sandport.sandbox import Sandbox
from sandport.testing._support import py
from sandport.testing.base import ConformanceBase

__all__ = ["TimeoutChecks", "assert_stops_growing"]

# Appends a line to `grow.log` every 50 ms, in the background, then blocks.
GROWER = "(while :; do echo x >> grow.log; sleep 0.05; done) & sleep 60"


async def assert_stops_growing(sandbox: Sandbox, path: str) -> None:
    """``path`` grew before (so the check can fail) and does not grow any more."""
    before = (await sandbox.stat(path)).size
    assert before > 0, f"{path} never grew: the background loop did not run"
    await anyio.sleep(1.0)
    after = (await sandbox.stat(path)).size
    assert after == before, f"{path} still grows ({before} -> {after} bytes): a background process survived"


class TimeoutChecks(ConformanceBase):
    async def test_timeout_keeps_partial_output(self, sandbox: Sandbox) -> None:
        code = (
            "import sys, time; print('before', flush=True); print('err', file=sys.stderr, flush=True); time.sleep(60)"
        )
        result = await sandbox.exec(py(code), timeout=2.5)
        assert result.timed_out
        assert result.exit_code == 124
        assert result.stdout == b"before\n"
        assert result.stderr == b"err\n"
        assert not result.ok

    async def test_timeout_duration_bounded(self, sandbox: Sandbox) -> None:
        started = time.monotonic()
        result = await sandbox.exec(["sleep", "120"], timeout=1)
        elapsed = time.monotonic() - started
        assert result.timed_out
        assert 0 < result.duration < 1 + self.slack
        assert elapsed < 1 + self.slack

    async def test_sandbox_usable_after_timeout(self, sandbox: Sandbox) -> None:
        await sandbox.exec(["sleep", "60"], timeout=0.5)
        result = await sandbox.exec(["echo", "alive"])
        assert result.stdout == b"alive\n"
        await sandbox.write_file("after.txt", "ok")
        assert await sandbox.read_file("after.txt") == b"ok"

    async def test_timeout_kills_background_children(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec(GROWER, timeout=1.5)
        assert result.timed_out
        await assert_stops_growing(sandbox, "grow.log")

    async def test_fast_command_with_timeout_is_not_timed_out(self, sandbox: Sandbox) -> None:
        result = await sandbox.exec(["echo", "quick"], timeout=60)
        assert not result.timed_out
        assert result.exit_code == 0
        assert result.stdout == b"quick\n"
