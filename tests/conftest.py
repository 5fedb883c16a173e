"""Shared test setup: keep sandport's state and audit log out of the user's home."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _sandport_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    state = tmp_path_factory.mktemp("sandport-state")
    if os.geteuid() == 0:
        # Local sandboxes run as an unprivileged user, who must be able to traverse (not
        # list) the directories down to the provider roots the tests create here.
        base = tmp_path_factory.getbasetemp()
        for directory in (base.parent, base):
            directory.chmod(directory.stat().st_mode | 0o111)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDPORT_AUDIT_LOG", str(state / "audit.jsonl"))
        mp.setenv("SANDPORT_HOME", str(state / "home"))
        yield


@pytest.fixture(autouse=True)
def _traversable_tmp_path(request: pytest.FixtureRequest) -> None:
    """As root, let the sandbox user traverse each test's ``tmp_path`` (where the tests put
    local provider roots); pytest makes it 0700."""
    if os.geteuid() == 0 and "tmp_path" in request.fixturenames:
        path = request.getfixturevalue("tmp_path")
        path.chmod(0o711)
