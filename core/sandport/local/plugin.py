"""Default plugin: registers the local provider."""

from __future__ import annotations

from sandport.hookspecs import Register, hookimpl
from sandport.local.provider import LocalProvider


@hookimpl
def sandport_register_providers(register: Register) -> None:
    register("local", LocalProvider)
