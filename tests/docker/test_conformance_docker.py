"""The conformance suite, live against the local Docker engine."""

from __future__ import annotations

from typing import Any, ClassVar

from _docker_testing import DEBIAN, TEST_LABEL, bridge_gateway

from sandport.provider import Provider
from sandport.testing import ProviderConformance
from sandport_docker import DockerProvider


class TestDockerConformance(ProviderConformance):
    provider_name = "docker"
    spec: ClassVar[dict[str, Any]] = {"image": DEBIAN, "labels": {TEST_LABEL: "conformance"}}
    xfail: ClassVar[dict[str, str]] = {}

    def make_provider(self) -> Provider:
        return DockerProvider()

    def host_address(self) -> str:
        return bridge_gateway()
