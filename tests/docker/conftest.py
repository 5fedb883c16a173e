"""Shared set-up for the Docker adapter's tests: fail loudly without an engine or the test
images (set SANDPORT_SKIP_DOCKER=1 to skip them on purpose), and remove whatever a test run
leaves behind."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from _docker_testing import BUSYBOX, DEBIAN, remove_leftovers

from sandport_docker import DockerProvider
from sandport_docker.sandbox import DockerSandbox


def _engine_problem() -> str | None:
    import docker

    try:
        client = docker.APIClient(version="auto", timeout=10)
    except Exception as exc:  # the engine is not there
        return f"no Docker engine: {exc} (run scripts/docker-engine.sh)"
    try:
        for image in (DEBIAN, BUSYBOX):
            try:
                client.inspect_image(image)
            except docker.errors.ImageNotFound:
                return f"test image {image} missing (run scripts/build-test-images.sh)"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session", autouse=True)
def _docker_engine() -> Iterator[None]:
    problem = _engine_problem()
    if problem and os.environ.get("SANDPORT_SKIP_DOCKER") == "1":
        pytest.skip(f"SANDPORT_SKIP_DOCKER=1: {problem}")
    if problem:
        pytest.fail(f"{problem}; or set SANDPORT_SKIP_DOCKER=1 to skip the Docker tests", pytrace=False)
    yield
    remove_leftovers()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider() -> AsyncIterator[DockerProvider]:
    """A Docker provider for one test, closed afterwards."""
    provider = DockerProvider()
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
async def made(provider: DockerProvider) -> AsyncIterator[list[DockerSandbox]]:
    """Sandboxes a test creates; all terminated afterwards."""
    sandboxes: list[DockerSandbox] = []
    try:
        yield sandboxes
    finally:
        with anyio.CancelScope(shield=True):
            for sandbox in sandboxes:
                await sandbox.terminate()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engine_restart: restarts the Docker engine; always runs after every other test of the session"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the engine-restart checks to the very end: restarting dockerd stops every
    container, so nothing else may run after (or during) them."""
    restart = [item for item in items if item.get_closest_marker("engine_restart")]
    if restart:
        items[:] = [item for item in items if not item.get_closest_marker("engine_restart")] + restart
