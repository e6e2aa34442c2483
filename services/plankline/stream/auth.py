"""Bearer tokens of the gateway: one per lab, kept only as SHA-256 digests.

A lab's token is a random secret it sends as ``authorization: Bearer <token>``
metadata; the gateway keeps ``sha256(token)`` hex per lab (from a JSON file it
re-reads when the file changes, so deleting a lab's line revokes its token
without a restart, and/or from an env secret). A token never reaches a log: only
the lab name does. Comparison is constant-time over the digests.

Example
-------
>>> token = new_token()
>>> table = TokenTable({"lab-a": token_digest(token)})
>>> table.lab_of(token)
'lab-a'
>>> table.lab_of("wrong") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_LAB = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text) to hand to a lab once."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the gateway stores for ``token``: its SHA-256 as 64 lowercase hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_table(text: str, where: str) -> dict[str, str]:
    """``{"lab": "<sha256 hex>"}`` JSON -> dict, checked (``where`` names the source in errors).

    A value that is not a 64-digit hex digest is refused: a clear-text token pasted
    by mistake must not silently become a digest nobody can match.
    """
    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error})") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object lab -> sha256 hex")
    table = {}
    for lab, digest in raw.items():
        if not _LAB.match(str(lab)):
            raise ValueError(f"{where}: lab name {lab!r} must be [A-Za-z0-9._-], <= 64 chars")
        digest = str(digest).lower().removeprefix("sha256:")
        if not _DIGEST.match(digest):
            raise ValueError(
                f"{where}: lab {lab!r}: value must be the token's sha256 as 64 hex digits "
                "(python -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode())"
                ".hexdigest())' TOKEN), not the token itself"
            )
        table[str(lab)] = digest
    return table


class TokenTable:
    """Lab -> token digest, from fixed entries plus an optional file re-read on change."""

    def __init__(self, fixed: Mapping[str, str] | None = None, path: Path | None = None) -> None:
        self._fixed = dict(fixed or {})
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._from_file: dict[str, str] = {}
        self._reload()

    @classmethod
    def from_settings(cls, tokens_json: str | None, tokens_file: str | None) -> TokenTable:
        fixed = parse_table(tokens_json, "PLANKLINE_GATEWAY_TOKENS") if tokens_json else {}
        return cls(fixed, Path(tokens_file) if tokens_file else None)

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._from_file = None, {}  # file removed: its tokens are revoked
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._from_file = parse_table(self._path.read_text(), str(self._path))
            self._stamp = stamp

    @property
    def labs(self) -> list[str]:
        with self._lock:
            self._reload()
            return sorted({**self._fixed, **self._from_file})

    def lab_of(self, token: str) -> str | None:
        """The lab whose token this is, or None (unknown or revoked)."""
        digest = token_digest(token)
        with self._lock:
            self._reload()
            entries = {**self._fixed, **self._from_file}
        found = None
        for lab, known in entries.items():  # no early exit: time does not depend on the match
            if hmac.compare_digest(known, digest):
                found = lab
        return found


def bearer(metadata: Mapping[str, str] | list[tuple[str, str]] | None) -> str | None:
    """The token of ``authorization: Bearer <token>`` call metadata, or None."""
    items = metadata.items() if isinstance(metadata, Mapping) else (metadata or [])
    for key, value in items:
        if key.lower() == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
