"""The key that guards a llama-server on the network, and the key a client sends to one.

A key never goes on a command line, where `ps` shows it to every user: smolconv reads it from SMOLCONV_API_KEY or
from a file, hands it to llama-server in a file only its own user can read (removed once the server has read it),
and a client sends it as `Authorization: Bearer …`. It is never printed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from smolconv.core.errors import SmolconvError

API_KEY_ENV = "SMOLCONV_API_KEY"


def read_api_key(key_file: Path | None = None) -> str | None:
    """The key in `key_file` (its first line), else SMOLCONV_API_KEY, else None."""
    if key_file is not None:
        try:
            text = Path(key_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not text"
            raise SmolconvError(f"cannot read the API key file {key_file} ({reason})",
                                "pass a readable file holding the key on its first line") from None
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise SmolconvError(f"the API key file {key_file} is empty", "write the key on its first line")
        return key
    return os.environ.get(API_KEY_ENV, "").strip() or None


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def check_exposure(host: str, api_key: str | None, no_auth: bool) -> None:
    """Refuse to open a model to the network with no key, unless the user said so in so many words."""
    if api_key or no_auth or is_loopback(host):
        return
    raise SmolconvError(f"--host {host} opens llama-server to the network, and no API key is set: anyone who can "
                        "reach the port could use the model",
                        f"set {API_KEY_ENV} (or --api-key-file FILE), or pass --no-auth to serve without a key")


@contextlib.contextmanager
def server_key_file(api_key: str) -> Iterator[Path]:
    """The key in a file only this user can read, in a private folder, for llama-server's --api-key-file."""
    folder = Path(tempfile.mkdtemp(prefix="smolconv-key-"))  # mode 0700
    path = folder / "api-key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(api_key + "\n")
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
