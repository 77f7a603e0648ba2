"""API keys: each belongs to one tenant; stored hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from statekeeper.settings import Settings

DEV_TENANT = "dev"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Maps presented API keys to tenants without keeping the keys themselves."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._tenants = [(_digest(key), tenant) for key, tenant in keys.items()]

    def tenant_for(self, presented: str) -> str | None:
        """The tenant of ``presented``, or None; every stored hash is compared."""
        digest = _digest(presented)
        found = None
        for stored, tenant in self._tenants:
            if hmac.compare_digest(stored, digest):
                found = tenant
        return found

    def __repr__(self) -> str:
        return f"KeyRing({len(self._tenants)} keys)"


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
