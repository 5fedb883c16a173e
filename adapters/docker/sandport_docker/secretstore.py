"""A sandbox's secrets, kept for ``connect`` from another process, and sealed by the host.

``create`` writes the secrets as JSON to a root-only file on a tmpfs in the container
(:data:`SECRETS_FILE`), so that another process can ``connect`` and still inject them; they
never reach ``docker inspect``, a commit or an image layer. The program in the sandbox may be
root and rewrite that file, so nothing read back from it is trusted as it is: at create time
the host seals the exact bytes with an HMAC-SHA256 under a key that never enters a container
(:func:`host_key`), and records the seal in the container's :data:`LABEL_SECRETS` label,
which nothing inside the container can change. A later process injects the file's content
only if it still matches the seal; otherwise it refuses with a
:class:`~sandport.errors.ProviderError` that says the sandbox tampered with its secrets.

The key lives in ``$SANDPORT_HOME/docker/secrets.key`` (else
``$XDG_DATA_HOME/sandport/docker/secrets.key``, else ``~/.local/share/sandport/...``): 32
random bytes, mode 0600, created on first use. A sandbox created with another key (another
user or host) cannot have its secrets verified here, and is treated like a tampered one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as secrets_module
import stat
import threading
from pathlib import Path

from sandport.errors import ProviderError
from sandport_docker.engine import NAME

__all__ = [
    "LABEL_SECRETS",
    "MAX_SECRETS_BYTES",
    "READ_SCRIPT",
    "SECRETS_DIR",
    "SECRETS_FILE",
    "STORE_SCRIPT",
    "SecretsTampered",
    "encode",
    "host_key",
    "key_path",
    "seal",
    "unseal",
]

#: Container label holding the seal (``hmac-sha256:<hex>``) of the stored secrets.
LABEL_SECRETS = "sandport.secrets"
SECRETS_DIR = "/run/sandport"
SECRETS_FILE = f"{SECRETS_DIR}/secrets.json"
#: The most that is ever read back from the file (its tmpfs holds 1 MiB).
MAX_SECRETS_BYTES = 1024 * 1024
_SCHEME = "hmac-sha256:"
_CONTEXT = b"sandport-docker secrets v1\0"
_KEY_SIZE = 32

#: ``sh -c STORE_SCRIPT sh JSON``: write the file, readable by root only.
STORE_SCRIPT = f'umask 077 && printf %s "$1" > {SECRETS_FILE}'
#: ``sh -c READ_SCRIPT sh``: print the file, never more than the cap, never from a device,
#: a FIFO or a symlink's target (exit 22).
READ_SCRIPT = (
    f"f={SECRETS_FILE}; if [ -L $f ] || [ ! -f $f ]; then exit 22; fi; exec head -c {MAX_SECRETS_BYTES + 1} -- $f"
)


class SecretsTampered(ProviderError):
    """The secrets stored in a sandbox no longer match the seal the host recorded."""


def key_path() -> Path:
    """Where the host key is kept (see the module docstring)."""
    base = os.environ.get("SANDPORT_HOME")
    if base:
        return Path(base) / "docker" / "secrets.key"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "sandport" / "docker" / "secrets.key"


_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


def host_key() -> bytes:
    """The host's sealing key, created (atomically, mode 0600) on first use.

    Raises:
        ProviderError: the key file exists but is not a private regular file of this user.
    """
    path = key_path()
    with _keys_lock:
        if path not in _keys:
            _keys[path] = _load_or_create(path)
        return _keys[path]


def _load_or_create(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    temp = path.with_name(f".{path.name}.{secrets_module.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets_module.token_bytes(_KEY_SIZE))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)  # never replaces a key another process created meanwhile
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise ProviderError(
                NAME,
                f"the secrets key {path} must be a regular file owned by you with mode 0600 "
                f"(fix: chmod 600 {path}, or remove it to start a new key)",
            )
        key = f.read(_KEY_SIZE + 1)
    if len(key) != _KEY_SIZE:
        raise ProviderError(NAME, f"the secrets key {path} is damaged (remove it to start a new key)")
    return key


def encode(values: dict[str, str]) -> bytes:
    """The stored form of the secrets (ASCII JSON, so that it passes a shell argument intact)."""
    return json.dumps(values, sort_keys=True, ensure_ascii=True).encode()


def seal(payload: bytes) -> str:
    """The label value that vouches for ``payload``."""
    return _SCHEME + hmac.new(host_key(), _CONTEXT + payload, hashlib.sha256).hexdigest()


def unseal(payload: bytes, label: str, sandbox_id: str) -> dict[str, str]:
    """The secrets in ``payload`` if it matches the seal ``label``.

    Raises:
        SecretsTampered: it does not (changed in the sandbox, or sealed with another key).
    """
    if not label.startswith(_SCHEME):
        raise SecretsTampered(
            NAME,
            f"the secrets of sandbox {sandbox_id} carry no seal (created by an older sandport): "
            "they cannot be verified and are not injected; recreate the sandbox",
        )
    if not hmac.compare_digest(seal(payload), label):
        raise SecretsTampered(
            NAME,
            f"the secrets stored in sandbox {sandbox_id} were tampered with (they no longer match "
            f"the seal recorded when it was created, or it was created with another key than "
            f"{key_path()}): they are not injected into commands. terminate() still works.",
        )
    data = json.loads(payload)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise SecretsTampered(NAME, f"the sealed secrets of sandbox {sandbox_id} are not a name-to-value map")
    return data
