"""sandport's Docker adapter: sandboxes as hardened containers on a Docker engine.

Installed as the ``docker`` entry point of the ``sandport`` group; ``sandport.get_provider
("docker")`` or ``sandport.open("docker", image=...)`` use it. See
:mod:`sandport_docker.provider` for what a sandbox is and what it guarantees.
"""

from __future__ import annotations

from sandport.hookspecs import Register, hookimpl
from sandport_docker.config import DockerConfig
from sandport_docker.provider import DockerProvider, ImageNotFound
from sandport_docker.sandbox import DockerSandbox

__all__ = ["DockerConfig", "DockerProvider", "DockerSandbox", "ImageNotFound", "sandport_register_providers"]


@hookimpl
def sandport_register_providers(register: Register) -> None:
    register("docker", DockerProvider)
