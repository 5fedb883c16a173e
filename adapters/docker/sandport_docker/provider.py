"""The Docker provider: sandboxes are hardened containers on a Docker engine.

Each sandbox is one container whose main process (``sleep``, under Docker's init) only keeps
it alive; every command is an exec instance. The container gets:

- all Linux capabilities dropped but :data:`~sandport_docker.config.BASE_CAPABILITIES`,
  ``no-new-privileges``, a pids limit (1024 unless ``resources.pids`` says otherwise) and
  the spec's cpu and memory limits (memory without extra swap); ``disk_mb`` only where the
  storage driver enforces it, else ``CapabilityNotSupported``;
- no network at all unless the policy is ``open`` (then Docker's default bridge); a domain
  allowlist cannot be enforced by Docker alone and is refused with ``CapabilityNotSupported``;
- ``spec.ports`` published on ``127.0.0.1`` (``options.publish_host``) at ports the engine
  picks; ``SandboxInfo.ports`` says where;
- ``env`` in the container's config, but ``secrets`` only in each exec's environment and in
  a root-only file on a tmpfs (so that ``connect`` from another process finds them): they
  never appear in ``docker inspect``, in ``docker commit`` snapshots or in image layers. The
  sandbox may rewrite that file, so the host seals it (see :mod:`sandport_docker.secretstore`)
  and a connected sandbox injects its content only if it still matches, loading it at the
  first command: ``connect`` and ``terminate`` never read it;
- commands run as ``spec.user`` (else the image's ``USER``); the container itself runs as
  root so that sandport's own helpers keep the few capabilities they need;
- optionally a read-only root file system, with the workdir and ``/tmp`` on volumes;
- the ``sandport.*`` labels (owner, creation time, creator, and the spec) that ``list``,
  ``connect`` and ``gc`` use; ``AutoRemove``, so a container that stops (killed from
  outside, lifetime over, engine restarted) leaves nothing behind;
- ``lifetime`` enforced by the container itself: its main process sleeps that long.

Images are never pulled: a missing image fails at once with :class:`ImageNotFound`.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import secrets as secrets_module
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from sandport.capabilities import Capability
from sandport.errors import CapabilityNotSupported, ProviderError, ProviderUnavailable, SandboxGone, SandboxNotFound
from sandport.models import SandboxInfo, SandboxSpec, SnapshotRef
from sandport.provider import LABEL_CREATED, LABEL_OWNER, Availability, Provider, restored_spec
from sandport_docker import files, secretstore
from sandport_docker.config import BASE_CAPABILITIES, DEFAULT_PIDS, DockerConfig
from sandport_docker.engine import NAME, Engine, api_error_text, docker_errors, docker_module
from sandport_docker.sandbox import (
    LABEL_SECRETS,
    LABEL_SNAPSHOT,
    LABEL_SPEC,
    LABEL_USER,
    SECRETS_DIR,
    DockerSandbox,
    _existing_ancestor,
    _spec_label,
    resolve_owner,
)

__all__ = ["DEFAULT_IMAGE", "DockerProvider", "ImageNotFound"]

#: The image used when ``SandboxSpec.image`` is None (override with ``default_image=`` or
#: ``SANDPORT_DOCKER_IMAGE``).
DEFAULT_IMAGE = "python:3.12-slim"
_FOREVER = 2**31 - 1  # seconds; `sleep` in both coreutils and busybox accepts it


class ImageNotFound(ProviderError):
    """The image is not on the engine; sandport never pulls, so nothing waits on a registry."""

    def __init__(self, image: str) -> None:
        self.image = image
        super().__init__(
            NAME,
            f"image {image!r} is not on this Docker engine, and sandport never pulls images. "
            f"Build it, or run `docker pull {image}` yourself, then try again.",
        )


def _created_at(labels: dict[str, str], fallback: Any = None) -> datetime:
    try:
        return datetime.fromisoformat(labels[LABEL_CREATED])
    except (KeyError, ValueError):
        if isinstance(fallback, int | float):
            return datetime.fromtimestamp(fallback, UTC)
        return datetime.now(UTC)


class DockerProvider(Provider):
    """Sandboxes as containers on a Docker engine.

    Args:
        base_url: the engine's address; default ``DOCKER_HOST``, else the local socket.
        default_image: the image when a spec names none.
        timeout: seconds for one engine API call (commands have their own timeouts).
        max_workers: how many blocking engine calls may run at once.
        tls: a ``docker.tls.TLSConfig`` for a ``tcp://`` engine (default from the env).
    """

    name = NAME
    capabilities = frozenset({
        Capability.STREAMING, Capability.STDIN, Capability.SHELL, Capability.SNAPSHOT, Capability.PAUSE,
        Capability.PORTS, Capability.NETWORK_NONE, Capability.NETWORK_OPEN, Capability.RESOURCE_LIMITS,
        Capability.USER, Capability.IMAGES, Capability.LIFETIME,
    })  # fmt: skip
    Config = DockerConfig

    def __init__(
        self,
        *,
        base_url: str | None = None,
        default_image: str | None = None,
        timeout: float = 60.0,
        max_workers: int = 64,
        tls: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.engine = Engine(base_url, tls=tls, timeout=timeout, max_workers=max_workers)
        self.default_image = default_image or os.environ.get("SANDPORT_DOCKER_IMAGE") or DEFAULT_IMAGE

    def __repr__(self) -> str:
        return f"<DockerProvider {self.engine.base_url}>"

    async def check(self) -> Availability:
        try:
            version = await self.engine.call(lambda api: api.version())
        except ProviderUnavailable as exc:
            return Availability(usable=False, reason=exc.reason)
        engine = f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')})"
        return Availability(usable=True, reason=f"{engine} at {self.engine.base_url}")

    async def aclose(self) -> None:
        self.engine.close()

    def _check_spec(self, spec: SandboxSpec) -> None:
        super()._check_spec(spec)
        if spec.ports and spec.network.mode == "none":
            raise CapabilityNotSupported(
                NAME, Capability.PORTS.value,
                "publishing ports needs a network; with network 'none' the container has none (use network='open')",
            )  # fmt: skip

    # -- create --------------------------------------------------------------------------

    def _host_config(self, api: Any, spec: SandboxSpec, options: DockerConfig, labels: dict[str, str]) -> Any:
        resources = spec.resources
        kwargs: dict[str, Any] = {
            "network_mode": "bridge" if spec.network.mode == "open" else "none",
            "cap_drop": ["ALL"],
            "cap_add": sorted({*BASE_CAPABILITIES, *options.cap_add}),
            "security_opt": ["no-new-privileges"],
            "pids_limit": resources.pids or DEFAULT_PIDS,
            "init": options.init,
            "auto_remove": True,
            "read_only": options.read_only_root,
        }
        if resources.memory_mb is not None:
            kwargs["mem_limit"] = kwargs["memswap_limit"] = resources.memory_mb * 1024 * 1024
        if resources.cpu is not None:
            kwargs["nano_cpus"] = int(resources.cpu * 1e9)
        if resources.disk_mb is not None:
            kwargs["storage_opt"] = {"size": f"{resources.disk_mb}M"}
        if spec.ports:
            kwargs["port_bindings"] = {port: (options.publish_host, None) for port in spec.ports}
        if spec.secrets:
            kwargs["tmpfs"] = {SECRETS_DIR: "mode=0700,size=1m"}
        if options.read_only_root:
            # Volumes, not tmpfs: the engine's archive API (files, upload) sees volumes.
            volume_labels = {k: v for k, v in labels.items() if k != LABEL_SPEC}
            kwargs["mounts"] = [
                docker_module.types.Mount(path, None, type="volume", labels=volume_labels)
                for path in dict.fromkeys([spec.workdir, "/tmp"])
            ]
        if options.runtime:
            kwargs["runtime"] = options.runtime
        if options.shm_size_mb:
            kwargs["shm_size"] = options.shm_size_mb * 1024 * 1024
        return api.create_host_config(**kwargs)

    async def _create(self, spec: SandboxSpec, options: Any) -> DockerSandbox:
        assert isinstance(options, DockerConfig)
        image = spec.image or self.default_image
        spec = spec.model_copy(update={"image": image})
        labels = {**spec.labels, LABEL_SPEC: _spec_label(spec)}
        # Always set, so that a seal a snapshot image inherited from its container is replaced.
        labels[LABEL_SECRETS] = secretstore.seal(secretstore.encode(spec.secret_env())) if spec.secrets else ""
        seconds = _FOREVER if spec.lifetime is None else max(1, math.ceil(spec.lifetime))

        def create(api: Any) -> tuple[str, str]:
            try:
                image_config = api.inspect_image(image).get("Config") or {}
            except docker_errors.APIError as exc:
                raise _create_error(exc, image) from exc
            default_user = spec.user or image_config.get("User") or ""
            if default_user:
                labels[LABEL_USER] = default_user
            try:
                container = api.create_container(
                    image,
                    command=[str(seconds)],
                    entrypoint=["sleep"],
                    user="0",
                    environment=spec.env,
                    labels=labels,
                    ports=list(spec.ports) or None,
                    name="sandport-" + secrets_module.token_hex(6),
                    host_config=self._host_config(api, spec, options, labels),
                )
            except docker_errors.APIError as exc:
                raise _create_error(exc, image) from exc
            cid = str(container["Id"])
            try:
                if not options.read_only_root:  # (no WorkingDir: the engine would create it root-owned)
                    _ensure_dir(api, cid, spec.workdir, default_user)
                api.start(cid)
            except BaseException as exc:
                try:
                    api.remove_container(cid, force=True, v=True)
                except docker_errors.APIError:
                    pass
                if isinstance(exc, docker_errors.APIError):
                    raise _create_error(exc, image) from exc
                raise
            return cid, default_user

        cid, default_user = await self.engine.call(create)
        sandbox = DockerSandbox(self, cid, spec, options, _created_at(spec.labels), default_user)
        if spec.secrets:
            try:
                await sandbox._store_secrets()
            except BaseException:
                await sandbox._terminate()
                raise
        return sandbox

    # -- find ----------------------------------------------------------------------------

    async def _connect(self, sandbox_id: str) -> DockerSandbox:
        try:
            data = await self.engine.call(lambda api: api.inspect_container(sandbox_id))
        except docker_errors.APIError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:  # unknown, or not an id at all
                raise SandboxNotFound(NAME, sandbox_id) from None
            raise ProviderError(NAME, f"connect {sandbox_id}: {api_error_text(exc)}") from exc
        labels = (data.get("Config") or {}).get("Labels") or {}
        if LABEL_SPEC not in labels:
            raise SandboxNotFound(NAME, sandbox_id, what="sandport sandbox")
        state = data.get("State") or {}
        if not state.get("Running"):
            raise SandboxGone(NAME, sandbox_id, f"its container stopped with status {state.get('ExitCode')}")
        spec = SandboxSpec.model_validate_json(labels[LABEL_SPEC])
        options = DockerConfig.model_validate(spec.options)
        created = _created_at(spec.labels)
        sandbox = DockerSandbox(self, str(data["Id"]), spec, options, created, labels.get(LABEL_USER, ""))
        sandbox._paused = bool(state.get("Paused"))
        # Loaded (and checked against this seal) at the first command, not here: a sandbox
        # that broke its secrets file must still be connectable, if only to terminate it.
        sandbox._sealed_secrets = labels.get(LABEL_SECRETS) or None
        return sandbox

    async def _list(self, labels: dict[str, str]) -> builtins.list[SandboxInfo]:
        filters = {"label": [LABEL_OWNER, *(f"{k}={v}" for k, v in labels.items())]}
        found = await self.engine.call(lambda api: api.containers(all=True, filters=filters))
        infos = []
        for item in found:
            raw_labels = item.get("Labels") or {}
            try:
                spec = SandboxSpec.model_validate_json(raw_labels[LABEL_SPEC])
            except (KeyError, ValidationError, ValueError):
                continue  # labelled by hand, or by another version: not ours to describe
            state = item.get("State")
            ports = {}
            for port in item.get("Ports") or []:
                if port.get("PublicPort") and port.get("Type") == "tcp":
                    host = port.get("IP") or "127.0.0.1"
                    host = "127.0.0.1" if host == "0.0.0.0" else host
                    ports[int(port["PrivatePort"])] = f"{host}:{port['PublicPort']}"
            infos.append(
                SandboxInfo(
                    id=str(item["Id"])[:12],
                    provider=NAME,
                    state="paused" if state == "paused" else "running" if state == "running" else "terminated",
                    created_at=_created_at(spec.labels, item.get("Created")),
                    labels=spec.labels,
                    image=spec.image,
                    workdir=spec.workdir,
                    isolation=DockerConfig.model_validate(spec.options).runtime or "container",
                    network=spec.network.mode,
                    ports=ports,
                )
            )
        return infos

    # -- snapshots -----------------------------------------------------------------------

    async def _restore(self, snapshot: SnapshotRef, overrides: dict[str, Any]) -> DockerSandbox:
        try:
            image = await self.engine.call(lambda api: api.inspect_image(snapshot.id))
        except docker_errors.APIError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:
                raise SandboxNotFound(NAME, snapshot.id, what="snapshot") from None
            raise ProviderError(NAME, f"restore {snapshot.id}: {api_error_text(exc)}") from exc
        config_labels = (image.get("Config") or {}).get("Labels") or {}
        if LABEL_SPEC not in config_labels or snapshot.id not in (image.get("RepoTags") or []):
            raise SandboxNotFound(NAME, snapshot.id, what="snapshot")
        spec = restored_spec(json.loads(config_labels[LABEL_SPEC]), overrides, image=snapshot.id)
        sandbox = await self.create(spec)
        assert isinstance(sandbox, DockerSandbox)
        return sandbox

    async def _delete_snapshot(self, snapshot: SnapshotRef) -> None:
        def delete(api: Any) -> None:
            try:
                api.remove_image(snapshot.id)
            except docker_errors.NotFound:
                raise SandboxNotFound(NAME, snapshot.id, what="snapshot") from None
            except docker_errors.APIError as exc:
                if exc.status_code != 409:
                    raise ProviderError(NAME, f"delete snapshot {snapshot.id}: {api_error_text(exc)}") from exc
                # Still used by a sandbox restored from it: drop the name now; the layers go
                # when the last such container does (`gc` sweeps them).
                api.remove_image(snapshot.id, force=True)

        await self.engine.call(delete)

    async def sweep_snapshots(self) -> builtins.list[str]:
        """Remove unnamed snapshot images that no container uses any more."""

        def sweep(api: Any) -> builtins.list[str]:
            removed = []
            for image in api.images(filters={"dangling": True, "label": LABEL_SNAPSHOT}):
                try:
                    api.remove_image(image["Id"])
                except docker_errors.APIError:
                    continue
                removed.append(str(image["Id"]))
            return removed

        return await self.engine.call(sweep)


def _create_error(exc: Any, image: str) -> Exception:
    text = api_error_text(exc)
    lowered = text.lower()
    if exc.status_code == 404 and ("no such image" in lowered or "not found" in lowered or "no such" in lowered):
        return ImageNotFound(image)
    if "storage-opt" in lowered or "storage opt" in lowered:
        detail = f"disk_mb cannot be enforced by this engine's storage driver: {text}"
        return CapabilityNotSupported(NAME, Capability.RESOURCE_LIMITS.value, detail)
    return ProviderError(NAME, f"creating a container from {image!r} failed: {text}")


def _ensure_dir(api: Any, cid: str, path: str, user: str) -> None:
    """Create ``path`` (owned by the sandbox user) in a created container if missing."""
    _, found = files.resolve(api, cid, path)
    if found is not None:
        return
    base, missing = _existing_ancestor(api, cid, path, path)
    owner = resolve_owner(api, cid, user)
    names = [os.path.join(*missing[: i + 1]) for i in range(len(missing))]
    files.put(api, cid, base, files.dir_tar(names, owner))
