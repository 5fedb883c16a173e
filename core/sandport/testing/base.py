"""The fixtures and settings every conformance check builds on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from sandport.provider import Provider
from sandport.sandbox import Sandbox
from sandport.testing._support import Sandboxes, required_capabilities

__all__ = ["ConformanceBase"]


class ConformanceBase:
    """Settings an adapter's test class overrides, and the fixtures the checks use."""

    __sandport_conformance__: ClassVar[bool] = True
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    #: The provider's registry name; ``make_provider`` builds it by default.
    provider_name: ClassVar[str] = ""
    #: Extra ``SandboxSpec`` fields for every sandbox the suite creates.
    spec: ClassVar[dict[str, Any]] = {}
    #: Known deviations: check name (or ``name[param]``) -> reason; run as strict xfails.
    xfail: ClassVar[dict[str, str]] = {}
    #: Seconds added to every upper bound on a duration (slow providers may raise it).
    slack: ClassVar[float] = 30.0

    def make_provider(self) -> Provider:
        """A new provider instance. Called once per check, and again by checks that need a
        second instance (as a later process would have)."""
        import sandport

        if not self.provider_name:
            raise TypeError(f"{type(self).__name__} must set provider_name or override make_provider()")
        return sandport.get_provider(self.provider_name)

    def host_address(self) -> str:
        """The address of the test host as a sandbox with an open network reaches it; the
        network checks' server binds there."""
        return "127.0.0.1"

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def provider(self, request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
        """The provider under test (closed afterwards); checks skip here on a missing capability."""
        provider = self.make_provider()
        try:
            missing = [c.value for c in required_capabilities(request.function) if c not in provider.capabilities]
            if missing:
                pytest.skip(f"{provider.name} lacks capability {', '.join(missing)}")
            yield provider
        finally:
            await provider.aclose()

    @pytest.fixture
    async def sandboxes(self, provider: Provider) -> AsyncIterator[Sandboxes]:
        """Creates sandboxes with the suite's ``spec``; terminates them all afterwards."""
        made = Sandboxes(provider, dict(self.spec))
        try:
            yield made
        finally:
            await made.close()

    @pytest.fixture
    async def sandbox(self, sandboxes: Sandboxes) -> Sandbox:
        """A fresh sandbox for one check, always terminated afterwards."""
        return await sandboxes.create()
