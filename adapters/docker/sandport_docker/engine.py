"""The connection to one Docker engine: the SDK client, error mapping and raw exec streams.

Everything that talks to the engine goes through :class:`Engine`:

- :meth:`Engine.call` runs a blocking ``docker.APIClient`` call in a worker thread (the SDK
  is synchronous) under the engine's own capacity limiter, so that many sandboxes working
  at once are not throttled by anyio's default limit of 40 threads, and turns "cannot reach
  the engine" into :class:`~sandport.errors.ProviderUnavailable` with the fix.
- :meth:`Engine.start_exec` starts an exec instance on a connection of its own and returns
  the raw, hijacked stream (``Upgrade: tcp``), read and written asynchronously: no thread
  per running command, and no byte lost between the HTTP response head and the output.
"""

from __future__ import annotations

import importlib
import json
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream

from sandport.errors import ProviderError, ProviderUnavailable

__all__ = ["NAME", "Engine", "docker_errors", "docker_module"]

NAME = "docker"
T = TypeVar("T")

#: The docker SDK has no type information: it is imported dynamically and used as ``Any``.
docker_module: Any = importlib.import_module("docker")
docker_errors: Any = importlib.import_module("docker.errors")
_requests_exc: Any = importlib.import_module("requests.exceptions")

FIX = (
    "Fix: start the Docker engine (`sudo systemctl start docker`, or run `sudo dockerd &`), "
    "or set DOCKER_HOST (or the provider's base_url) to the address of a running engine, "
    "e.g. DOCKER_HOST=unix:///var/run/docker.sock or DOCKER_HOST=tcp://127.0.0.1:2375."
)
_DEFAULT_HOST = "unix:///var/run/docker.sock"
# What requests raises when the engine's socket is missing or refuses connections. (Not
# OSError in general: the functions run through Engine.call raise FileNotFoundError and
# PermissionError of their own for paths inside a sandbox.)
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (_requests_exc.ConnectionError,)


def unavailable(address: str, cause: BaseException | str) -> ProviderUnavailable:
    text = str(cause)
    # requests wraps urllib3 wraps the socket error: name the innermost cause plainly.
    if "FileNotFoundError" in text or "No such file" in text:
        text = "no engine socket at that path"
    elif "Connection refused" in text or "ConnectionRefused" in text:
        text = "connection refused"
    elif "Permission denied" in text or "PermissionError" in text:
        text = "permission denied on the engine socket; join the 'docker' group or run as root"
    return ProviderUnavailable(NAME, f"cannot reach the Docker engine at {address} ({text[:300]}). {FIX}")


def api_error_text(exc: Any) -> str:
    """The engine's own message from a ``docker.errors.APIError``."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation)
    return str(exc)


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


class Engine:
    """One Docker engine, shared by a provider and its sandboxes.

    Args:
        base_url: the engine's address (``unix:///var/run/docker.sock``, ``tcp://host:2375``);
            ``None`` reads ``DOCKER_HOST`` (and ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``)
            like the docker CLI does.
        timeout: seconds for one API call (not for a running command).
        max_workers: how many blocking SDK calls may run at once.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        tls: Any = None,
        timeout: float = 60.0,
        max_workers: int = 64,
    ) -> None:
        env = docker_module.utils.kwargs_from_env()
        self.base_url: str = base_url or env.get("base_url") or _DEFAULT_HOST
        self.tls: Any = tls if tls is not None else (env.get("tls") if base_url is None else None)
        self.timeout = timeout
        self.max_workers = max_workers
        self._api: Any = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<Engine {self.base_url}>"

    # -- the SDK client --------------------------------------------------------------------

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_workers)
        return self._limiter

    def api(self) -> Any:
        """The shared ``docker.APIClient`` (built on first use; negotiates the API version)."""
        with self._lock:
            if self._api is None:
                try:
                    self._api = docker_module.APIClient(
                        base_url=self.base_url,
                        version="auto",
                        tls=self.tls or False,
                        timeout=self.timeout,
                        max_pool_size=self.max_workers,
                        user_agent="sandport-docker",
                    )
                except docker_errors.DockerException as exc:
                    raise unavailable(self.base_url, exc) from exc
            return self._api

    def run(self, fn: Callable[[Any], T]) -> T:
        """Call ``fn(api)`` here, in this thread, mapping "engine unreachable" errors."""
        api = self.api()
        try:
            return fn(api)
        except _CONNECTION_ERRORS as exc:
            raise unavailable(self.base_url, exc) from exc
        except _requests_exc.Timeout as exc:
            raise ProviderUnavailable(
                NAME, f"the Docker engine at {self.base_url} did not answer within {self.timeout:g}s. {FIX}"
            ) from exc

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(api)`` in a worker thread; see :meth:`run`."""
        return await anyio.to_thread.run_sync(self.run, fn, limiter=self.limiter)

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

    # -- raw exec streams ------------------------------------------------------------------

    async def _connect(self) -> ByteStream:
        url = docker_module.utils.parse_host(self.base_url, False, tls=bool(self.tls))
        parts = urlsplit(url)
        try:
            if parts.scheme == "http+unix":
                return await anyio.connect_unix(parts.path)
            if parts.scheme in ("http", "https") and parts.hostname:
                port = parts.port or (2376 if parts.scheme == "https" else 2375)
                if parts.scheme == "https":
                    return await anyio.connect_tcp(
                        parts.hostname, port, tls=True, ssl_context=self._ssl_context(), tls_standard_compatible=False
                    )
                return await anyio.connect_tcp(parts.hostname, port)
        except OSError as exc:
            raise unavailable(self.base_url, exc) from exc
        raise ProviderUnavailable(
            NAME, f"engine address {self.base_url!r} is not supported for exec streams; use unix:// or tcp://"
        )

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self.tls
        context = ssl.create_default_context(cafile=getattr(tls, "ca_cert", None))
        if getattr(tls, "verify", True) is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert = getattr(tls, "cert", None)
        if cert:
            context.load_cert_chain(*cert)
        return context

    async def start_exec(self, exec_id: str) -> tuple[ByteStream, bytes]:
        """Start an exec instance and return its hijacked stream plus any bytes that came
        with the response head. The stream carries stdin (raw) one way and the 8-byte-header
        multiplexed stdout/stderr the other.

        Raises:
            ProviderError: the engine refused (``status`` and message attached).
        """
        version = self.api().api_version
        body = b'{"Detach":false,"Tty":false}'
        head = (
            f"POST /v{version}/exec/{exec_id}/start HTTP/1.1\r\n"
            "Host: docker\r\nUser-Agent: sandport-docker\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        ).encode()
        stream = await self._connect()
        try:
            await stream.send(head + body)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                try:
                    buffer += await stream.receive(65536)
                except anyio.EndOfStream:
                    raise ProviderError(NAME, f"the engine closed the connection starting exec {exec_id}") from None
            response, rest = buffer.split(b"\r\n\r\n", 1)
            lines = response.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            if status in (101, 200):
                return stream, rest
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0") or 0)
            with anyio.move_on_after(5):
                while len(rest) < length:
                    rest += await stream.receive(65536)
            raise ExecStartError(status, _message(rest))
        except BaseException:
            await stream.aclose()
            raise


class ExecStartError(ProviderError):
    """The engine refused to start an exec instance."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(NAME, f"exec start failed ({status}): {message}")


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()
