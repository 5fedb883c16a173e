"""Constants and helpers shared by the Docker adapter's test modules.

(No ``__init__.py`` here on purpose: a package named ``docker`` would shadow the SDK.)
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import struct
import subprocess

DEBIAN = "sandport-test/debian:bookworm"
BUSYBOX = "sandport-test/busybox:latest"
#: Every sandbox these tests create carries this label (plus sandport's own ones).
TEST_LABEL = "sandport-test"


def docker_cli(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, timeout=120).stdout


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, as containers see it.

    The IPAM config names a ``Gateway`` only after dockerd's first restart (a fresh data root
    has just the ``Subnet``), so the address is read off the bridge's host interface, and
    failing that taken as the subnet's first host, which is where dockerd puts it."""
    network = json.loads(docker_cli("network", "inspect", "bridge"))[0]
    for config in network["IPAM"]["Config"]:
        if config.get("Gateway") and ":" not in config["Gateway"]:
            return str(config["Gateway"])
    interface = network.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    try:
        return _interface_ipv4(interface)
    except OSError:
        pass
    for config in network["IPAM"]["Config"]:
        subnet = ipaddress.ip_network(config.get("Subnet", "::/128"))
        if subnet.version == 4:
            return str(next(subnet.hosts()))
    raise RuntimeError(f"docker's bridge network has no IPv4 gateway: {network['IPAM']['Config']}")


def _interface_ipv4(name: str) -> str:
    """The IPv4 address of a host network interface (SIOCGIFADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", name.encode()[:15])
        answer = fcntl.ioctl(sock.fileno(), 0x8915, request)  # SIOCGIFADDR
    return socket.inet_ntoa(answer[20:24])


def remove_leftovers() -> None:
    """Remove the containers and snapshot images that this test process left behind (and
    nobody else's: another test run may share the engine)."""
    mine = f"--filter label={TEST_LABEL} --filter label=sandport.creator={socket.gethostname()}:{os.getpid()}"
    subprocess.run(
        f"docker ps -aq {mine} | xargs -r docker rm -f -v >/dev/null 2>&1; "
        f"docker images -q {mine} | xargs -r docker rmi -f >/dev/null 2>&1",
        shell=True, check=False, timeout=300,
    )  # fmt: skip
