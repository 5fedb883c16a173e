"""``SandboxSpec.options`` for Docker sandboxes, and the hardening every container gets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BASE_CAPABILITIES", "DEFAULT_PIDS", "DockerConfig"]

#: The Linux capabilities a container keeps; every other one is dropped. Enough for a root
#: shell to own, chmod and remove its files, signal its processes, switch to another user
#: and bind low ports; not enough to mount, trace, load modules, use raw sockets or mknod.
BASE_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE")
#: The pids limit when ``SandboxSpec.resources.pids`` is not set: a fork bomb stops here.
DEFAULT_PIDS = 1024


class DockerConfig(BaseModel):
    """Docker-specific options, given as ``SandboxSpec(options={...})``.

    Every container runs with all capabilities dropped except :data:`BASE_CAPABILITIES`,
    ``no-new-privileges``, a pids limit and an init process, whatever these options say.
    """

    model_config = ConfigDict(extra="forbid")

    read_only_root: bool = Field(
        default=False,
        description="mount the image read-only; only the workdir and /tmp (volumes) stay writable",
    )
    publish_host: str = Field(default="127.0.0.1", description="host address that spec.ports are published on")
    cap_add: list[str] = Field(default_factory=list, description="extra Linux capabilities, e.g. ['NET_RAW']")
    init: bool = Field(default=True, description="run Docker's init as PID 1 (reaps zombies)")
    runtime: str | None = Field(default=None, description="OCI runtime, e.g. 'runsc' for gVisor")
    shm_size_mb: int | None = Field(default=None, gt=0, description="size of /dev/shm in MiB")

    @field_validator("cap_add")
    @classmethod
    def _capability_names(cls, value: list[str]) -> list[str]:
        names = []
        for raw in value:
            name = raw.upper().removeprefix("CAP_")
            if not name.replace("_", "").isalnum() or name == "ALL":
                raise ValueError(f"{raw!r} is not a Linux capability name (and 'ALL' is not allowed)")
            names.append(name)
        return names
