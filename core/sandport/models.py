"""The data that crosses the contract: specs going in, results coming out.

Inputs (:class:`SandboxSpec`, :class:`Resources`, :class:`NetworkPolicy`) forbid unknown
fields, so a typo fails loudly with the field's name. Results are frozen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "DEFAULT_WORKDIR",
    "ExecResult",
    "FileInfo",
    "NetworkPolicy",
    "OutputChunk",
    "Resources",
    "SandboxInfo",
    "SandboxSpec",
    "ShellResult",
    "SnapshotRef",
]

DEFAULT_WORKDIR = "/workspace"
MiB = 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class Resources(_Input):
    """Resource limits. ``None`` means the provider's default; a provider that cannot
    enforce a limit that was set raises ``CapabilityNotSupported`` on create."""

    cpu: float | None = Field(default=None, gt=0, description="CPU cores")
    memory_mb: int | None = Field(default=None, gt=0, description="memory in MiB")
    disk_mb: int | None = Field(default=None, gt=0, description="disk in MiB")
    pids: int | None = Field(default=None, gt=0, description="maximum number of processes")

    def is_set(self) -> bool:
        return any(v is not None for v in (self.cpu, self.memory_mb, self.disk_mb, self.pids))


class NetworkPolicy(_Input):
    """Outbound network access.

    - ``none`` (the default): no network at all; the sandbox cannot reach even the host.
    - ``allowlist``: only the domains or CIDRs in ``allow``; providers that cannot enforce
      this refuse it with ``CapabilityNotSupported`` rather than allowing everything.
    - ``open``: unrestricted outbound access.
    """

    mode: Literal["none", "allowlist", "open"] = "none"
    allow: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _allow_only_with_allowlist(self) -> NetworkPolicy:
        if self.mode == "allowlist" and not self.allow:
            raise ValueError("network mode 'allowlist' needs at least one entry in 'allow'")
        if self.mode != "allowlist" and self.allow:
            raise ValueError(f"'allow' entries only apply to mode 'allowlist', not {self.mode!r}")
        return self


class SandboxSpec(_Input):
    """What to create. Every field has a safe default, so ``SandboxSpec()`` is valid.

    ``network`` accepts a :class:`NetworkPolicy` or the shorthands ``"none"`` and ``"open"``.
    ``secrets`` are exported as environment variables to every command like ``env``, but are
    never logged, audited or shown in ``repr``. ``options`` are provider-specific and are
    validated by the provider's own ``Config`` model.
    """

    image: str | None = None
    resources: Resources = Field(default_factory=Resources)
    lifetime: float | None = Field(default=None, gt=0, description="seconds until auto-terminate")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    workdir: str = DEFAULT_WORKDIR
    user: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(default_factory=list)
    max_output_bytes: int = Field(default=16 * MiB, gt=0, description="cap per output stream")
    max_file_bytes: int = Field(default=512 * MiB, gt=0, description="cap for read_file")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("network", mode="before")
    @classmethod
    def _network_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in ("none", "open"):
                raise ValueError(
                    f"unknown network mode {value!r}: use 'none', 'open', or "
                    "NetworkPolicy(mode='allowlist', allow=[...])"
                )
            return {"mode": value}
        return value

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"workdir must be an absolute path, got {value!r}")
        return value

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} is outside 1-65535")
        return value

    @field_validator("env", "secrets")
    @classmethod
    def _valid_env_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"invalid environment variable name {name!r}")
        return value

    def secret_env(self) -> dict[str, str]:
        """The secrets as plain environment variables (for providers to inject)."""
        return {k: v.get_secret_value() for k, v in self.secrets.items()}


class ExecResult(_Result):
    """The outcome of a finished command.

    ``stdout`` and ``stderr`` are raw bytes, each capped at the sandbox's
    ``max_output_bytes`` (``truncated`` says whether either hit the cap). A command that
    ran out of time has ``timed_out=True`` and carries whatever it printed until then.
    """

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    truncated: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout_text


class ShellResult(ExecResult):
    """An :class:`ExecResult` from a persistent shell.

    After a timeout the shell either interrupted the command (``interrupted``) or had to be
    restarted (``restarted``), in which case cwd, environment and background jobs were lost.
    """

    interrupted: bool = False
    restarted: bool = False


class OutputChunk(_Result):
    """A piece of output from a running process, in arrival order."""

    stream: Literal["stdout", "stderr"]
    data: bytes


class FileInfo(_Result):
    """One entry of a sandbox's filesystem, as ``stat`` and ``list_dir`` return it."""

    path: str
    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: datetime

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"


class SnapshotRef(_Result):
    """A handle on a snapshot; JSON-serialisable so that a later process can restore it.

    ``SnapshotRef.model_validate_json(ref.model_dump_json())`` round-trips.
    """

    provider: str
    id: str
    sandbox_id: str | None = None
    created_at: datetime = Field(default_factory=_now)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SandboxInfo(_Result):
    """What is known about a sandbox. ``isolation`` names the mechanism that confines it
    (``bwrap``, ``container``, ``microvm``, ...), or ``none`` when nothing does."""

    id: str
    provider: str
    state: Literal["running", "paused", "terminated"]
    created_at: datetime
    labels: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    workdir: str = DEFAULT_WORKDIR
    isolation: str = "none"
    network: Literal["none", "allowlist", "open"] = "none"
    ports: dict[int, str] = Field(default_factory=dict, description="sandbox port -> host address")
