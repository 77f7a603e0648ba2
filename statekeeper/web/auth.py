"""API keys: each belongs to one tenant; stored hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from statekeeper.settings import Grant, Settings

DEV_TENANT = "dev"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Maps presented API keys to their grants without keeping the keys themselves."""

    def __init__(self, keys: Mapping[str, Grant | str]) -> None:
        self._grants = [
            (_digest(key), grant if isinstance(grant, Grant) else Grant(grant))
            for key, grant in keys.items()
        ]

    def grant_for(self, presented: str) -> Grant | None:
        """The grant of ``presented``, or None; every stored hash is compared."""
        digest = _digest(presented)
        found = None
        for stored, grant in self._grants:
            if hmac.compare_digest(stored, digest):
                found = grant
        return found

    def tenant_for(self, presented: str) -> str | None:
        """The tenant of ``presented``, or None."""
        grant = self.grant_for(presented)
        return None if grant is None else grant.tenant

    def __repr__(self) -> str:
        return f"KeyRing({len(self._grants)} keys)"


def dev_key(var_dir: Path) -> str:
    """The generated key of the ``dev`` tenant, shared by the workers of one var dir."""
    path = var_dir / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = "sk-dev-" + secrets.token_urlsafe(24)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker wrote it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def keyring_from(settings: Settings) -> tuple[KeyRing, str | None]:
    """The key ring, and the generated dev key when no keys were configured."""
    keys = settings.tenant_keys()
    if keys:
        return KeyRing(keys), None
    key = dev_key(settings.var_dir)
    return KeyRing({key: DEV_TENANT}), key
