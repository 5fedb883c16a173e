"""The errors sandport raises.

Every error is a subclass of :class:`SandportError`, so ``except SandportError`` catches
anything the library itself decided to raise. File operations raise Python's own
``OSError`` subclasses instead (``FileNotFoundError``, ``IsADirectoryError``,
``NotADirectoryError``, ``PermissionError``, ``FileExistsError``) so that code written
against the local filesystem keeps working. A non-zero exit status is data
(``ExecResult.exit_code``), never an exception, unless the caller passed ``check=True``.

The tree::

    SandportError
    ├── ProviderNotFound          no provider of that name is installed (names the package)
    ├── ProviderUnavailable       installed, but cannot be used now (engine down, no binary)
    │   └── ProviderAuthError     credentials missing or rejected
    ├── SandboxNotFound           no sandbox with that id (connect, restore, delete_snapshot)
    ├── SandboxGone               the sandbox was terminated or died under you
    ├── CapabilityNotSupported    the provider cannot do this (or cannot enforce this policy)
    ├── PolicyDenied              a policy plugin refused the operation before it ran
    ├── RateLimited               the provider asked us to slow down (retry_after seconds)
    ├── FileTooLarge              a read would exceed the configured cap
    ├── CommandFailed             check=True and the command exited non-zero
    │   └── CommandTimedOut       check=True and the command hit its timeout
    └── ProviderError             anything else the provider reported (original chained)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandport.models import ExecResult

__all__ = [
    "CapabilityNotSupported",
    "CommandFailed",
    "CommandTimedOut",
    "FileTooLarge",
    "PolicyDenied",
    "ProviderAuthError",
    "ProviderError",
    "ProviderNotFound",
    "ProviderUnavailable",
    "RateLimited",
    "SandboxGone",
    "SandboxNotFound",
    "SandportError",
]


class SandportError(Exception):
    """Base class of every error sandport raises itself."""


class ProviderNotFound(SandportError):
    """No provider is registered under the requested name.

    The message lists the installed providers and, for a provider sandport knows about
    (docker, modal, ...), the distribution to install.
    """

    def __init__(self, name: str, installed: list[str], package: str | None = None) -> None:
        self.name = name
        self.installed = installed
        self.package = package
        hint = f" Install it with: pip install {package}" if package else ""
        have = ", ".join(sorted(installed)) or "none"
        super().__init__(f"No sandport provider named {name!r}.{hint} Installed providers: {have}.")


class ProviderUnavailable(SandportError):
    """The provider is installed but cannot be used right now; the message says how to fix it."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider}: {reason}")


class ProviderAuthError(ProviderUnavailable):
    """Credentials are missing or were rejected by the provider."""


class SandboxNotFound(SandportError):
    """No sandbox (or snapshot) with this id exists for this provider."""

    def __init__(self, provider: str, sandbox_id: str, what: str = "sandbox") -> None:
        self.provider = provider
        self.sandbox_id = sandbox_id
        super().__init__(f"{provider}: no {what} with id {sandbox_id!r}")


class SandboxGone(SandportError):
    """The sandbox was terminated, expired or died; it cannot run anything any more."""

    def __init__(self, provider: str, sandbox_id: str, detail: str = "it was terminated") -> None:
        self.provider = provider
        self.sandbox_id = sandbox_id
        super().__init__(f"{provider}: sandbox {sandbox_id} is gone: {detail}")


class CapabilityNotSupported(SandportError):
    """The provider lacks a capability, or cannot enforce a requested policy.

    sandport refuses rather than silently widening a policy: a network allowlist on a
    provider that can only block everything or nothing raises this error.
    """

    def __init__(self, provider: str, capability: str, detail: str = "") -> None:
        self.provider = provider
        self.capability = capability
        extra = f": {detail}" if detail else ""
        super().__init__(f"{provider} does not support {capability}{extra}")


class PolicyDenied(SandportError):
    """A ``sandport_check_policy`` hook refused the operation before it ran."""

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation} denied by policy: {reason}")


class RateLimited(SandportError):
    """The provider is throttling us; retry after ``retry_after`` seconds if known."""

    def __init__(self, provider: str, retry_after: float | None = None) -> None:
        self.provider = provider
        self.retry_after = retry_after
        when = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        super().__init__(f"{provider}: rate limited{when}")


class FileTooLarge(SandportError):
    """Reading the file would exceed the sandbox's ``max_file_bytes`` cap.

    Raise the cap in the spec, or use ``download()`` which streams to disk.
    """

    def __init__(self, path: str, size: int, limit: int) -> None:
        self.path = path
        self.size = size
        self.limit = limit
        super().__init__(
            f"{path} is {size} bytes, over the read cap of {limit} bytes; "
            "raise SandboxSpec.max_file_bytes or use download() instead"
        )


class CommandFailed(SandportError):
    """Raised by ``exec(..., check=True)`` when the command exits non-zero.

    ``result`` holds the full output; the message shows ``command`` and ``stderr_tail``,
    which the caller passes with secrets already redacted.
    """

    def __init__(self, result: ExecResult, command: str, stderr_tail: str = "") -> None:
        self.result = result
        self.command = command
        more = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"command {command!r} exited with {result.exit_code}{more}")


class CommandTimedOut(CommandFailed):
    """Raised by ``exec(..., check=True)`` when the command hit its timeout."""

    def __init__(self, result: ExecResult, command: str, stderr_tail: str = "") -> None:
        super().__init__(result, command, stderr_tail)
        self.args = (f"command {command!r} timed out after {result.duration:.1f}s",)


class ProviderError(SandportError):
    """Any other failure reported by a provider; the original exception is chained."""

    def __init__(self, provider: str, message: str) -> None:
        self.provider = provider
        super().__init__(f"{provider}: {message}")
