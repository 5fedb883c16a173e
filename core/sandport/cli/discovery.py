"""Which providers are installed, which are usable now, and opening them for ``ls``/``gc``."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

import sandport
from sandport.cli.output import note
from sandport.hookspecs import ProviderFactory
from sandport.plugins import KNOWN_PACKAGES, provider_factories
from sandport.provider import Provider

__all__ = ["Installed", "Status", "installed", "not_installed", "probe_all", "usable_providers"]

#: How long one provider's ``check()`` may take before it is reported unusable.
CHECK_TIMEOUT = 30.0


@dataclass
class Installed:
    """One registered provider with its aliases (one factory, several names)."""

    name: str
    factory: ProviderFactory
    aliases: list[str] = field(default_factory=list)


@dataclass
class Status:
    """What ``sandport providers`` shows for one provider."""

    name: str
    aliases: list[str]
    capabilities: list[str]
    usable: bool
    reason: str
    provider: Provider | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "aliases": self.aliases,
            "capabilities": self.capabilities,
            "usable": self.usable,
            "reason": self.reason,
        }


def installed() -> list[Installed]:
    """The installed providers, aliases folded into their provider (the first name
    registered for a factory is its name), sorted by name."""
    by_factory: dict[int, Installed] = {}
    for name, factory in provider_factories().items():
        entry = by_factory.get(id(factory))
        if entry is None:
            by_factory[id(factory)] = Installed(name, factory)
        else:
            entry.aliases.append(name)
    return sorted(by_factory.values(), key=lambda e: e.name)


def not_installed() -> dict[str, str]:
    """Providers sandport knows about that are not installed here: name -> package."""
    names = set(provider_factories())
    return {name: package for name, package in sorted(KNOWN_PACKAGES.items()) if name not in names}


def _capabilities(source: object) -> list[str]:
    caps = getattr(source, "capabilities", None)
    if isinstance(caps, frozenset | set):
        return sorted(str(c) for c in caps)
    return []


def _failure(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


async def probe(entry: Installed) -> Status:
    """Build the provider and ask ``check()``; never raises: a failure makes it unusable.

    The returned status holds the open provider when it is usable (the caller closes it).
    """
    status = Status(entry.name, entry.aliases, _capabilities(entry.factory), usable=False, reason="")
    try:
        provider = entry.factory()
    except Exception as exc:
        status.reason = f"could not be set up: {_failure(exc)}"
        return status
    status.capabilities = _capabilities(provider) or status.capabilities
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            availability = await provider.check()
    except TimeoutError:
        status.reason = f"check() did not answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:
        status.reason = f"check() failed: {_failure(exc)}"
    else:
        status.usable, status.reason = availability.usable, availability.reason
    if status.usable:
        status.provider = provider
    else:
        await _close(provider)
    return status


async def _close(provider: Provider) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await provider.aclose()
        except Exception:  # closing is best effort; the listing matters more
            pass


async def probe_all() -> builtins.list[Status]:
    """Probe every installed provider concurrently."""
    entries = installed()
    statuses: list[Status | None] = [None] * len(entries)

    async def one(i: int, entry: Installed) -> None:
        statuses[i] = await probe(entry)

    async with anyio.create_task_group() as tg:
        for i, entry in enumerate(entries):
            tg.start_soon(one, i, entry)
    return [s for s in statuses if s is not None]


@asynccontextmanager
async def usable_providers(explicit: str | None) -> AsyncIterator[builtins.list[Provider]]:
    """The provider named ``explicit`` (errors propagate), or else every installed provider
    that is usable now; unusable ones are skipped with a note on stderr."""
    if explicit is not None:
        provider = sandport.get_provider(explicit)
        try:
            yield [provider]
        finally:
            await _close(provider)
        return
    statuses = await probe_all()
    for status in statuses:
        if not status.usable:
            note(f"skipping provider {status.name!r}: {status.reason or 'not usable'}")
    providers = [s.provider for s in statuses if s.provider is not None]
    try:
        yield providers
    finally:
        for provider in providers:
            await _close(provider)
