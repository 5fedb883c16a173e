"""The pytest plugin of sandport's conformance suite (entry point ``pytest11: sandport``).

It is inert unless a test class subclasses :class:`sandport.testing.ProviderConformance`:
it defines no fixtures and imports none of the checks. For the tests of such classes only,
it adds the ``conformance`` marker and turns the class's ``xfail`` entries into strict
xfails carrying the given reason. An ``xfail`` entry that names no check is an error, so a
typo cannot silently hide a failure.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path
from typing import Any, TypeGuard

import pytest

__all__ = ["pytest_collection_modifyitems", "pytest_configure"]

# The checks live in a library, not in test files: have pytest rewrite their asserts so a
# failing check shows the values it compared. This only marks module names.
pytest.register_assert_rewrite(
    *(f"sandport.testing.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "plugin")
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: checks from sandport.testing's conformance suite")


def _is_conformance(cls: type[Any] | None) -> TypeGuard[type[Any]]:
    return cls is not None and bool(getattr(cls, "__sandport_conformance__", False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    classes: dict[type[Any], set[str]] = {}
    for item in items:
        cls: type[Any] | None = getattr(item, "cls", None)
        if not _is_conformance(cls):
            continue
        names = (item.name, getattr(item, "originalname", item.name))
        classes.setdefault(cls, set()).update(names)
        item.add_marker(pytest.mark.conformance)
        xfail: dict[str, str] = getattr(cls, "xfail", {})
        reason = next((xfail[n] for n in names if n in xfail), None)
        if reason is not None:
            provider = getattr(cls, "provider_name", "") or cls.__name__
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"{provider}: {reason}"))
    for cls, seen in classes.items():
        known = {n for n in dir(cls) if n.startswith("test_")} | seen
        unknown = sorted(set(getattr(cls, "xfail", {})) - known)
        if unknown:
            raise pytest.UsageError(f"{cls.__qualname__}.xfail names checks that do not exist: {', '.join(unknown)}")
