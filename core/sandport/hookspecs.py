"""The hooks a sandport plugin may implement.

A plugin is a module (or object) with functions decorated by ``@sandport.hookimpl`` whose
names match the specifications below. Plugins are found through the ``sandport`` entry-point
group; see :mod:`sandport.plugins`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from sandport.audit import AuditEvent, PolicyRequest
    from sandport.provider import Provider

__all__ = ["ProviderFactory", "Register", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("sandport")
hookimpl = pluggy.HookimplMarker("sandport")


class ProviderFactory(Protocol):
    """Builds a provider from keyword settings (credentials, endpoints, ...)."""

    def __call__(self, **settings: Any) -> Provider: ...


class Register(Protocol):
    """The callback handed to :func:`sandport_register_providers`."""

    def __call__(self, name: str, factory: ProviderFactory, aliases: tuple[str, ...] = ()) -> None: ...


@hookspec
def sandport_register_providers(register: Register) -> None:
    """Register the providers this plugin offers.

    :param register: call ``register(name, factory, aliases=())`` once per provider; the
        factory is usually the ``Provider`` subclass itself. Registering a name twice is an
        error reported against the second plugin.
    """


@hookspec
def sandport_audit(event: AuditEvent) -> None:
    """Receive one structured event after every operation completes (or fails).

    Called for create, connect, exec, start, every file operation, snapshot, restore,
    pause, resume and terminate. Secret values are already redacted from ``event``.
    An exception raised here is logged and swallowed: auditing never breaks the operation.

    :param event: what happened, to which sandbox, how long it took and how it ended.
    """


@hookspec
def sandport_check_policy(request: PolicyRequest) -> str | None:
    """Decide whether an operation may run, before it runs.

    Return ``None`` to allow, or a reason string to deny; any denial makes the operation
    raise :class:`~sandport.errors.PolicyDenied` with that reason and nothing is executed.
    Raising ``PolicyDenied`` directly works too.

    :param request: the operation about to run and its (redacted) arguments.
    """
