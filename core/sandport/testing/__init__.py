"""The conformance suite every sandport provider adapter must pass.

Subclass :class:`ProviderConformance` in one of your ``test_*.py`` files::

    from sandport.testing import ProviderConformance

    class TestDockerConformance(ProviderConformance):
        provider_name = "docker"                   # built with sandport.get_provider(...)
        spec = {"image": "sandport-test:latest"}   # extra SandboxSpec fields, every sandbox
        xfail = {"test_pause_resume": "why this provider deviates"}   # strict xfails

        def make_provider(self) -> Provider:       # optional: build it yourself
            return DockerProvider(base_url=...)

Run it with pytest (``-m conformance`` selects only these checks). It needs anyio's pytest
plugin, which ships with anyio; the ``sandport`` pytest plugin (registered by the core's
``pytest11`` entry point) applies the ``conformance`` marker and the ``xfail`` entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandport.testing._support import Sandboxes, TokenServer, requires
    from sandport.testing.base import ConformanceBase
    from sandport.testing.suite import ProviderConformance

__all__ = ["ConformanceBase", "ProviderConformance", "Sandboxes", "TokenServer", "requires"]

_LOCATIONS = {
    "ConformanceBase": "sandport.testing.base",
    "ProviderConformance": "sandport.testing.suite",
    "Sandboxes": "sandport.testing._support",
    "TokenServer": "sandport.testing._support",
    "requires": "sandport.testing._support",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that loading the pytest plugin (a submodule) imports no
    # checks and pytest can still rewrite their asserts.
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'sandport.testing' has no attribute {name!r}")
