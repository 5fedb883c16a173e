"""Shared test setup: keep sandport's state and audit log out of the user's home."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _sandport_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    state = tmp_path_factory.mktemp("sandport-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDPORT_AUDIT_LOG", str(state / "audit.jsonl"))
        mp.setenv("SANDPORT_HOME", str(state / "home"))
        yield
