"""Constants and helpers shared by the Docker adapter's test modules.

(No ``__init__.py`` here on purpose: a package named ``docker`` would shadow the SDK.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

DEBIAN = "sandport-test/debian:bookworm"
BUSYBOX = "sandport-test/busybox:latest"
#: Every sandbox these tests create carries this label (plus sandport's own ones).
TEST_LABEL = "sandport-test"


def docker_cli(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, timeout=120).stdout


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, as containers see it."""
    for config in json.loads(docker_cli("network", "inspect", "bridge"))[0]["IPAM"]["Config"]:
        if "Gateway" in config and ":" not in config["Gateway"]:
            return str(config["Gateway"])
    raise RuntimeError("docker's bridge network has no IPv4 gateway")


def remove_leftovers() -> None:
    """Remove the containers and snapshot images that this test process left behind (and
    nobody else's: another test run may share the engine)."""
    mine = f"--filter label={TEST_LABEL} --filter label=sandport.creator={socket.gethostname()}:{os.getpid()}"
    subprocess.run(
        f"docker ps -aq {mine} | xargs -r docker rm -f -v >/dev/null 2>&1; "
        f"docker images -q {mine} | xargs -r docker rmi -f >/dev/null 2>&1",
        shell=True, check=False, timeout=300,
    )  # fmt: skip
