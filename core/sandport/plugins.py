"""The plugin manager and the provider registry.

Plugins come from two places: the default plugins shipped in the core (the local provider
and the JSONL audit log) and the ``sandport`` entry-point group, which is how every adapter,
first- or third-party, is found::

    [project.entry-points.sandport]
    docker = "sandport_docker"

``SANDPORT_PLUGINS`` restricts which entry-point plugins load: a comma-separated list of
entry-point names (``SANDPORT_PLUGINS=docker``), or empty to load none. A plugin that fails
to import or register is warned about and skipped; the others keep working.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import warnings
from typing import Any

import pluggy

from sandport import hookspecs
from sandport.errors import ProviderNotFound
from sandport.hookspecs import ProviderFactory

__all__ = [
    "KNOWN_PACKAGES",
    "PluginWarning",
    "get_plugin_manager",
    "provider_factories",
    "reset",
]

log = logging.getLogger("sandport.plugins")

ENTRY_POINT_GROUP = "sandport"
DEFAULT_PLUGINS = ("sandport.local.plugin", "sandport.audit")
KNOWN_PACKAGES = {
    "docker": "sandport-docker",
    "modal": "sandport-modal",
    "daytona": "sandport-daytona",
    "cloudflare": "sandport-cloudflare",
    "vercel": "sandport-vercel",
}


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered and was skipped."""


_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_factories: dict[str, ProviderFactory] | None = None


def _skip(name: str, exc: BaseException) -> None:
    message = f"sandport plugin {name!r} failed to load and was skipped: {exc!r}"
    log.warning(message)
    warnings.warn(message, PluginWarning, stacklevel=3)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = os.environ.get("SANDPORT_PLUGINS")
    names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if names is not None and ep.name not in names:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not break the others
            _skip(ep.name, exc)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("sandport")
            pm.add_hookspecs(hookspecs)
            for module in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(module), name=module)
            _load_entry_points(pm)
            _pm = pm
        return _pm


def provider_factories() -> dict[str, ProviderFactory]:
    """Every registered provider name (aliases included) mapped to its factory."""
    global _factories
    if _factories is not None:
        return _factories
    pm = get_plugin_manager()
    factories: dict[str, ProviderFactory] = {}
    for plugin_name, plugin in pm.list_name_plugin():
        impl = getattr(plugin, "sandport_register_providers", None)
        if impl is None:
            continue
        found: dict[str, ProviderFactory] = {}

        def register(
            name: str,
            factory: ProviderFactory,
            aliases: tuple[str, ...] = (),
            _found: dict[str, ProviderFactory] = found,
        ) -> None:
            for key in (name, *aliases):
                if key in factories or key in _found:
                    raise ValueError(f"provider name {key!r} is already registered")
                _found[key] = factory

        try:
            impl(register=register)
        except Exception as exc:
            _skip(str(plugin_name), exc)
            continue
        factories.update(found)
    _factories = factories
    return factories


def create_provider(name: str, **settings: Any) -> Any:
    """Build the provider registered as ``name``; raises ``ProviderNotFound`` if there is none."""
    factories = provider_factories()
    factory = factories.get(name)
    if factory is None:
        raise ProviderNotFound(name, list(factories), KNOWN_PACKAGES.get(name))
    return factory(**settings)


def reset() -> None:
    """Forget the plugin manager and registry (tests use this after changing plugins)."""
    global _pm, _factories
    with _lock:
        _pm = None
        _factories = None
