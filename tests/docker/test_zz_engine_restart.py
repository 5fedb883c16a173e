"""The engine goes away and comes back: calls fail fast saying why, then work again.

Restarting dockerd stops every container on the engine, so this check is marked
``engine_restart`` and the conftest runs it after everything else. It needs root, and is
skipped under pytest-xdist (another worker could be using the engine) or when
SANDPORT_TEST_NO_ENGINE_RESTART is set.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest
from _docker_testing import DEBIAN, TEST_LABEL

from sandport import ProviderUnavailable, SandboxGone
from sandport_docker import DockerProvider

pytestmark = [pytest.mark.anyio, pytest.mark.engine_restart]

ENGINE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docker-engine.sh"
LABELS = {TEST_LABEL: "engine-restart"}


def _dockerd_pid() -> int | None:
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "dockerd" else None


async def _stop_dockerd(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    with anyio.fail_after(120):
        while Path(f"/proc/{pid}").exists():
            await anyio.sleep(0.2)


async def _start_dockerd() -> None:
    with anyio.fail_after(180):
        await anyio.run_process(["bash", str(ENGINE_SCRIPT)], check=True)


async def test_engine_restart_then_calls_work_again() -> None:
    if os.environ.get("SANDPORT_TEST_NO_ENGINE_RESTART"):
        pytest.skip("SANDPORT_TEST_NO_ENGINE_RESTART is set")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("another xdist worker may be using the engine")
    if os.geteuid() != 0 or not ENGINE_SCRIPT.is_file():
        pytest.skip("restarting dockerd needs root and scripts/docker-engine.sh")
    pid = _dockerd_pid()
    if pid is None:
        pytest.skip("dockerd was not started with a pid file here (/var/run/docker.pid)")

    provider = DockerProvider()
    sandbox = await provider.create(image=DEBIAN, labels=LABELS)
    assert (await sandbox.exec(["true"])).ok
    try:
        await _stop_dockerd(pid)

        # While the engine is down: every call fails at once, naming the fix.
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="dockerd") as error:
            await provider.create(image=DEBIAN, labels=LABELS)
        assert "DOCKER_HOST" in str(error.value)
        with pytest.raises(ProviderUnavailable):
            await sandbox.exec(["true"])
        with pytest.raises(ProviderUnavailable):
            await sandbox.read_file("/etc/hostname")
        availability = await provider.check()
        assert not availability.usable and "dockerd" in availability.reason
        assert time.monotonic() - started < 10, "calls to a stopped engine must fail fast"
    finally:
        await _start_dockerd()

    # The same provider object works again: its pooled connections are replaced.
    assert (await provider.check()).usable
    try:
        result = await sandbox.exec(["echo", "survived"])
        assert result.stdout == b"survived\n"  # an engine with live-restore keeps containers
    except SandboxGone as gone:
        assert "no longer exists" in str(gone) or "stopped" in str(gone), str(gone)
    fresh = await provider.create(image=DEBIAN, labels=LABELS)
    try:
        assert (await fresh.exec(["echo", "back"])).stdout == b"back\n"
        await fresh.write_file("after.txt", "restart")
        assert await fresh.read_file("after.txt") == b"restart"
    finally:
        await fresh.terminate()
        await sandbox.terminate()
        await provider.aclose()
