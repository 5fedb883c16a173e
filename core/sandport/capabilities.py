"""What a provider can do, declared up front.

A provider lists its capabilities in ``Provider.capabilities``. Asking for something outside
that set raises :class:`~sandport.errors.CapabilityNotSupported`; the conformance suite skips
the checks a provider's capabilities exclude.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Capability"]


class Capability(StrEnum):
    """One thing a provider may or may not support."""

    STREAMING = "streaming"  # start() yields output as it arrives
    STDIN = "stdin"  # write_stdin/close_stdin and exec(stdin=...)
    SHELL = "shell"  # open_shell()
    SNAPSHOT = "snapshot"  # filesystem snapshot() and restore()
    MEMORY_SNAPSHOT = "memory_snapshot"  # snapshot includes running processes
    PAUSE = "pause"  # pause() / resume()
    PORTS = "ports"  # expose sandbox ports to the host
    NETWORK_NONE = "network_none"  # can enforce NetworkPolicy(mode="none")
    NETWORK_OPEN = "network_open"  # can give unrestricted network
    NETWORK_ALLOWLIST = "network_allowlist"  # can enforce a domain/CIDR allowlist
    RESOURCE_LIMITS = "resource_limits"  # enforces cpu/memory/pids limits
    USER = "user"  # exec(user=...) and SandboxSpec.user
    IMAGES = "images"  # SandboxSpec.image selects the root filesystem
    LIFETIME = "lifetime"  # SandboxSpec.lifetime terminates the sandbox by itself
