"""The :class:`Provider` contract: where sandboxes come from.

A provider is a factory of sandboxes on one backend (local processes, a Docker engine, a
cloud service). Adapters subclass it, declare ``name``, ``capabilities`` and optionally a
``Config`` model for ``SandboxSpec.options``, and implement the ``_`` methods. The public
methods add what every provider shares: spec validation, refusing what the provider cannot
enforce, ownership labels, policy checks and audit events.
"""

from __future__ import annotations

import builtins
import getpass
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pluggy
from pydantic import BaseModel, ConfigDict, SecretStr

from sandport.audit import AuditEvent, PolicyRequest, Redactor
from sandport.capabilities import Capability
from sandport.errors import CapabilityNotSupported, PolicyDenied, SandboxGone, SandboxNotFound
from sandport.models import SandboxInfo, SandboxSpec, SnapshotRef

if TYPE_CHECKING:
    from sandport.sandbox import Sandbox

__all__ = ["LABEL_CREATED", "LABEL_CREATOR", "LABEL_KEEP", "LABEL_OWNER", "Availability", "NoOptions", "Provider"]

log = logging.getLogger("sandport")

#: Labels sandport puts on every sandbox it creates; ``ls`` and ``gc`` select by them.
LABEL_OWNER = "sandport.owner"
LABEL_CREATED = "sandport.created"
LABEL_CREATOR = "sandport.creator"
#: Set (to any value) on sandboxes meant to outlive their creator; ``gc`` leaves them alone.
LABEL_KEEP = "sandport.keep"


def current_owner() -> str:
    """The owner label value for sandboxes this user creates: ``user@host``."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _creator() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class NoOptions(BaseModel):
    """The ``Config`` of a provider that takes no ``SandboxSpec.options``."""

    model_config = ConfigDict(extra="forbid")


class Availability(BaseModel):
    """Whether a provider can be used right now, and if not, what to do about it."""

    model_config = ConfigDict(frozen=True)

    usable: bool
    reason: str = ""


class Provider(ABC):
    """Creates, finds and restores sandboxes on one backend.

    Use as an async context manager (or call ``aclose``) to release connections.
    """

    #: The registry name (``local``, ``docker``, ...).
    name: ClassVar[str]
    #: What this provider can do; see :class:`~sandport.capabilities.Capability`.
    capabilities: ClassVar[frozenset[Capability]]
    #: Validates ``SandboxSpec.options`` for this provider.
    Config: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, *, plugins: pluggy.PluginManager | None = None) -> None:
        self._plugins = plugins

    @property
    def plugins(self) -> pluggy.PluginManager:
        if self._plugins is None:
            from sandport.plugins import get_plugin_manager

            self._plugins = get_plugin_manager()
        return self._plugins

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- policy and audit, shared with Sandbox -------------------------------------------

    @asynccontextmanager
    async def _audited(
        self, operation: str, sandbox_id: str | None, details: dict[str, Any], redactor: Redactor
    ) -> AsyncIterator[dict[str, Any]]:
        """Ask the policy hooks, run the body, then emit one audit event however it ends."""
        hook = self.plugins.hook
        request = PolicyRequest(operation=operation, provider=self.name, sandbox_id=sandbox_id, details=details)
        started = time.monotonic()
        for reason in hook.sandport_check_policy(request=request):
            if reason:
                reason = redactor.text(reason)
                self._emit(
                    AuditEvent(
                        operation=operation,
                        provider=self.name,
                        sandbox_id=sandbox_id,
                        outcome="denied",
                        error=reason,
                        details=details,
                    )
                )
                raise PolicyDenied(operation, reason)
        extra: dict[str, Any] = {}
        outcome: Literal["ok", "error", "denied"] = "ok"
        error: str | None = None
        try:
            yield extra
        except PolicyDenied as exc:
            outcome, error = "denied", redactor.text(str(exc))
            raise
        except BaseException as exc:
            outcome, error = "error", redactor.text(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._emit(AuditEvent(
                operation=operation, provider=self.name, sandbox_id=sandbox_id or extra.get("sandbox_id"),
                outcome=outcome, error=error, duration=time.monotonic() - started,
                details={**details, **redactor.value(extra)},
            ))  # fmt: skip

    def _emit(self, event: AuditEvent) -> None:
        try:
            self.plugins.hook.sandport_audit(event=event)
        except Exception:  # auditing must never break the operation it reports
            log.exception("sandport_audit hook failed for %s", event.operation)

    def _require(self, capability: Capability, detail: str = "") -> None:
        if capability not in self.capabilities:
            raise CapabilityNotSupported(self.name, capability.value, detail)

    def _check_spec(self, spec: SandboxSpec) -> None:
        """Refuse what this provider cannot enforce, before anything is created."""
        mode = spec.network.mode
        network_cap = {"none": Capability.NETWORK_NONE, "open": Capability.NETWORK_OPEN,
                       "allowlist": Capability.NETWORK_ALLOWLIST}[mode]  # fmt: skip
        self._require(network_cap, f"network mode {mode!r} cannot be enforced here")
        if spec.resources.is_set():
            self._require(Capability.RESOURCE_LIMITS, "cpu/memory/disk/pids limits cannot be enforced here")
        if spec.ports:
            self._require(Capability.PORTS)
        if spec.user is not None:
            self._require(Capability.USER)
        if spec.lifetime is not None:
            self._require(Capability.LIFETIME)
        if spec.image is not None:
            self._require(Capability.IMAGES, "this provider has no images; leave image unset")

    # -- the public API ------------------------------------------------------------------

    async def create(self, spec: SandboxSpec | None = None, **fields: Any) -> Sandbox:
        """Create and start a sandbox.

        Args:
            spec: a :class:`SandboxSpec`, or None to build one from ``fields``
                (``create(image="python:3.12", network="open")``).

        Returns:
            A running :class:`Sandbox`, labelled with its owner, creation time and creator.

        Raises:
            pydantic.ValidationError: an unknown field or an invalid value (names the field).
            CapabilityNotSupported: the spec asks for something this provider cannot enforce.
            ProviderUnavailable: the backend cannot be reached.
            PolicyDenied: a policy plugin refused.
        A failed create leaves no sandbox behind.
        """
        if spec is None:
            spec = SandboxSpec(**fields)
        elif fields:
            spec = spec.model_copy(update=fields)
            spec = SandboxSpec.model_validate(spec.model_dump())
        options = self.Config.model_validate(spec.options)
        self._check_spec(spec)
        spec = spec.model_copy(update={"labels": {
            **spec.labels,
            LABEL_OWNER: current_owner(),
            LABEL_CREATED: datetime.now(UTC).isoformat(timespec="seconds"),
            LABEL_CREATOR: _creator(),
        }})  # fmt: skip
        redactor = Redactor(spec.secret_env().values())
        details = redactor.value(spec.model_dump(mode="json", exclude={"secrets"}))
        details["secrets"] = sorted(spec.secrets)
        async with self._audited("create", None, details, redactor) as op:
            sandbox = await self._create(spec, options)
            op["sandbox_id"] = sandbox.id
            return sandbox

    async def connect(self, sandbox_id: str) -> Sandbox:
        """Attach to an existing sandbox, possibly created by another process.

        Raises:
            SandboxNotFound: no sandbox with this id.
            SandboxGone: it exists but is terminated.
        """
        async with self._audited("connect", sandbox_id, {}, Redactor()):
            return await self._connect(sandbox_id)

    async def list(self, labels: dict[str, str] | None = None) -> builtins.list[SandboxInfo]:
        """Sandboxes of this provider whose labels include all of ``labels``."""
        wanted = labels or {}
        found = await self._list(wanted)
        return [i for i in found if all(i.labels.get(k) == v for k, v in wanted.items())]

    async def restore(self, snapshot: SnapshotRef, **overrides: Any) -> Sandbox:
        """Create a new sandbox from a snapshot; ``overrides`` replace spec fields, except
        ``labels``, which are added to the snapshot's own labels. Secrets are not part of a
        snapshot: pass ``secrets=`` again if the new sandbox needs them.

        Raises:
            SandboxNotFound: the snapshot no longer exists.
            CapabilityNotSupported: no ``SNAPSHOT`` capability, or a ref from another provider.
        """
        self._require(Capability.SNAPSHOT)
        if snapshot.provider != self.name:
            raise CapabilityNotSupported(self.name, "restore", f"snapshot belongs to provider {snapshot.provider!r}")
        redactor = Redactor(_secret_values(overrides.get("secrets")))
        details = redactor.value({k: v for k, v in overrides.items() if k != "secrets"})
        if "secrets" in overrides:
            details["secrets"] = sorted(overrides["secrets"] or {})
        async with self._audited("restore", None, {"snapshot_id": snapshot.id, **details}, redactor) as op:
            sandbox = await self._restore(snapshot, overrides)
            op["sandbox_id"] = sandbox.id
            return sandbox

    async def delete_snapshot(self, snapshot: SnapshotRef) -> None:
        """Delete a snapshot. Raises ``SandboxNotFound`` if it does not exist."""
        self._require(Capability.SNAPSHOT)
        async with self._audited("delete_snapshot", None, {"snapshot_id": snapshot.id}, Redactor()):
            await self._delete_snapshot(snapshot)

    async def gc(
        self,
        older_than: timedelta = timedelta(0),
        *,
        owner: str | None = None,
        include_kept: bool = False,
        dry_run: bool = False,
    ) -> builtins.list[str]:
        """Terminate this user's sandboxes that were left behind, and return their ids.

        A sandbox is left behind when it is older than ``older_than`` and the process that
        created it is gone (checked when it ran on this host; for other hosts age decides).
        Sandboxes labelled ``sandport.keep`` are kept unless ``include_kept``. With
        ``dry_run`` nothing is terminated: the ids that would be are returned.
        """
        cutoff = datetime.now(UTC) - older_than
        removed = []
        for info in await self.list({LABEL_OWNER: owner or current_owner()}):
            if info.state == "terminated" or info.created_at > cutoff:
                continue
            if _creator_alive(info.labels.get(LABEL_CREATOR, "")):
                continue
            if LABEL_KEEP in info.labels and not include_kept:
                continue
            if not dry_run:
                try:
                    sandbox = await self.connect(info.id)
                    await sandbox.terminate()
                except (SandboxNotFound, SandboxGone):
                    continue
            removed.append(info.id)
        return removed

    async def check(self) -> Availability:
        """Whether this provider can be used now (binary present, engine up, credentials)."""
        return Availability(usable=True)

    async def aclose(self) -> None:
        """Release connections held by the provider. Sandboxes keep running."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- what a provider implements ------------------------------------------------------

    @abstractmethod
    async def _create(self, spec: SandboxSpec, options: Any) -> Sandbox:
        """Create a sandbox for a validated spec (``options`` is a ``Config`` instance).
        Clean up anything partly created before re-raising a failure."""

    @abstractmethod
    async def _connect(self, sandbox_id: str) -> Sandbox: ...

    @abstractmethod
    async def _list(self, labels: dict[str, str]) -> builtins.list[SandboxInfo]:
        """Return sandboxes; filtering by ``labels`` server-side is optional."""

    async def _restore(self, snapshot: SnapshotRef, overrides: dict[str, Any]) -> Sandbox:
        raise CapabilityNotSupported(self.name, Capability.SNAPSHOT.value)

    async def _delete_snapshot(self, snapshot: SnapshotRef) -> None:
        raise CapabilityNotSupported(self.name, Capability.SNAPSHOT.value)


def restored_spec(saved: dict[str, Any], overrides: dict[str, Any], **fixed: Any) -> SandboxSpec:
    """The spec of a sandbox restored from a snapshot, for adapters' ``_restore``.

    ``saved`` is the snapshotted sandbox's spec as JSON data (without secrets). sandport's
    own labels are dropped (the new sandbox gets fresh ones), ``overrides`` replace fields
    but add to ``labels``, and ``fixed`` (say ``image=``) wins over both.
    """
    labels = {k: v for k, v in saved.get("labels", {}).items() if not k.startswith("sandport.")}
    labels.update(overrides.get("labels", {}))
    return SandboxSpec.model_validate({**saved, **overrides, **fixed, "labels": labels})


def _secret_values(secrets: Any) -> builtins.list[str]:
    """The plain values of a ``secrets=`` override (str or ``SecretStr`` values)."""
    if not isinstance(secrets, dict):
        return []
    return [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in secrets.values()]


def _creator_alive(creator: str) -> bool:
    """True if ``host:pid`` names a process still running on this host."""
    host, _, pid = creator.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
