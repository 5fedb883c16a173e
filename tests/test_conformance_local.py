"""The conformance suite against the local provider (bubblewrap isolation, for real)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from sandport.local import LocalProvider
from sandport.local.isolation import bwrap_problem
from sandport.provider import Provider
from sandport.testing import ProviderConformance


class TestLocalConformance(ProviderConformance):
    provider_name = "local"
    xfail: ClassVar[dict[str, str]] = {}

    @pytest.fixture(autouse=True)
    def _root(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        if problem := bwrap_problem():  # a missing prerequisite fails this lane, never skips it
            pytest.fail(f"local isolation unavailable: {problem}")
        self.root = tmp_path_factory.mktemp("local-provider")
        self.root.chmod(0o711)  # traversable by the sandbox user when the tests run as root

    def make_provider(self) -> Provider:
        return LocalProvider(root=self.root)
