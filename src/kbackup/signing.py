"""Signed manifests: an Ed25519 key on the server signs each manifest, so a backup that an
intruder with write access to the storage swapped or rewrote is caught (docs/format.md,
"The manifest signature").

The signature is detached: `manifest.json.sig`, the raw 64-byte Ed25519 signature of the
exact bytes of `manifest.json`, written before the manifest (the manifest stays the last
object). The manifest names its key in `signature.key`: the lowercase hex SHA-256 of the raw
32-byte public key (its fingerprint). Files under state_dir/signing/:

    ed25519.key        the signing key (PEM PKCS#8, 0600; the directory 0700), made at first
                       use; never logged, never in a config snapshot
    trusted/<fp>.pub   public keys (PEM) also trusted: older keys of this server (rotation)
                       and other servers' keys (`kbackupctl keys import-signing`)

A manifest is trusted when its signature verifies with a key of that keyring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from kbackup.errors import CryptoError, Invalid
from kbackup.repository import Manifest, encode_manifest

ALGORITHM = "ed25519"
KEY_FILE = "ed25519.key"
log = logging.getLogger("kbackup.signing")
_lock = threading.Lock()
_signers: dict[Path, tuple[int, Signer]] = {}  # key file -> (its mtime_ns, the signer)


class SigningError(CryptoError):
    """The signing key or a trusted public key cannot be used (one line naming the file)."""


def key_dir(state_dir: Path) -> Path:
    return state_dir / "signing"


def trusted_dir(state_dir: Path) -> Path:
    return key_dir(state_dir) / "trusted"


def fingerprint(key: Ed25519PublicKey) -> str:
    """The lowercase hex SHA-256 of the raw 32-byte public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class Signer:
    """The server's signing key, loaded once (again when its file changes)."""

    key: Ed25519PrivateKey
    fingerprint: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def sign_manifest(self, manifest: Manifest) -> bytes:
        """Name this key in the manifest, then sign its bytes as they will be stored."""
        manifest.signature = {"algorithm": ALGORITHM, "key": self.fingerprint}
        return self.key.sign(encode_manifest(manifest))


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    """The key in PEM PKCS#8, 0600 from the first byte, written beside and renamed."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    part = path.with_name(path.name + ".new")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, path)


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningError(f"signing key {path}: cannot read it: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise SigningError(f"signing key {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {path}: not an Ed25519 key") from None
    return key


def signer(state_dir: Path) -> Signer:
    """This server's signer; the key is made (0600, in a 0700 directory) when missing."""
    path = key_dir(state_dir) / KEY_FILE
    with _lock:
        try:
            if not path.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                path.parent.chmod(0o700)
                _write_private(path, Ed25519PrivateKey.generate())
                log.info("event=signing.key_created file=%s", path)
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            raise SigningError(f"signing key {path}: {exc.strerror}") from None
        cached = _signers.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        key = _load_private(path)
        made = Signer(key, fingerprint(key.public_key()))
        _signers[path] = (mtime, made)
        return made


def load_public(data: bytes, source: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; SigningError naming `source` otherwise."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SigningError(f"{source}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{source}: not an Ed25519 public key")
    return key


def keyring(state_dir: Path) -> dict[str, Ed25519PublicKey]:
    """Every trusted public key by fingerprint: this server's own and trusted/*.pub. A file
    there that is no Ed25519 public key is logged and skipped (it trusts nothing)."""
    own = signer(state_dir).public_key
    keys = {fingerprint(own): own}
    folder = trusted_dir(state_dir)
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        try:
            key = load_public(path.read_bytes(), f"trusted key {path}")
        except (SigningError, OSError) as exc:
            log.error("event=signing.bad_trusted_key file=%s error=%r", path, str(exc))
            continue
        keys[fingerprint(key)] = key
    return keys


def trust_file(state_dir: Path, key: Ed25519PublicKey) -> Path:
    """Keep a public key in the trusted keyring as trusted/<fingerprint>.pub."""
    folder = trusted_dir(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{fingerprint(key)}.pub"
    part = path.with_name(path.name + ".new")
    part.write_text(public_pem(key))
    os.replace(part, path)
    return path


def import_public(state_dir: Path, pem: str) -> dict[str, str]:
    """Trust another server's (or an older) public key, given as PEM text."""
    try:
        key = load_public(pem.encode(), "public_key_pem")
    except SigningError as exc:
        raise Invalid(str(exc)) from None
    path = trust_file(state_dir, key)
    log.info("event=signing.key_imported fingerprint=%s file=%s", fingerprint(key), path)
    return {"fingerprint": fingerprint(key), "file": str(path)}


def rotate(state_dir: Path) -> dict[str, str]:
    """A new signing key; the old public key joins the trusted keyring first, so the
    backups it signed stay trusted."""
    old = signer(state_dir)
    trust_file(state_dir, old.public_key)
    with _lock:
        _write_private(key_dir(state_dir) / KEY_FILE, Ed25519PrivateKey.generate())
    new = signer(state_dir)
    log.info("event=signing.key_rotated old=%s new=%s", old.fingerprint, new.fingerprint)
    return {"old_fingerprint": old.fingerprint, "fingerprint": new.fingerprint}


def describe(state_dir: Path) -> dict[str, Any]:
    """The public half of the signing key and the keyring (GET /v1/keys/signing)."""
    own = signer(state_dir)
    return {"algorithm": ALGORITHM, "fingerprint": own.fingerprint,
            "public_key_pem": public_pem(own.public_key),
            "trusted": sorted(k for k in keyring(state_dir) if k != own.fingerprint)}


@dataclass(frozen=True)
class Trust:
    """Whether a manifest is what a trusted key signed; `reason` says why not."""

    trusted: bool
    reason: str | None = None

    @property
    def state(self) -> str:
        return "trusted" if self.trusted else "untrusted"


def check(stored: bytes, signature: bytes | None, keys: dict[str, Ed25519PublicKey]) -> Trust:
    """The trust of a manifest's exact stored bytes and its detached signature."""
    try:
        named = json.loads(stored).get("signature") or {}
    except (ValueError, AttributeError):
        return Trust(False, "manifest.json is not a JSON object")
    fp = named.get("key") if isinstance(named, dict) else None
    if not fp:
        return Trust(False, "no signature (manifest.json names no signing key)")
    if named.get("algorithm") != ALGORITHM:
        return Trust(False, f"signature algorithm {named.get('algorithm')!r} is not ed25519")
    if signature is None:
        return Trust(False, "no signature (manifest.json.sig is missing)")
    key = keys.get(str(fp))
    if key is None:
        return Trust(False, f"signed by unknown key {fp} (import its public key with"
                            " `kbackupctl keys import-signing FILE`)")
    try:
        key.verify(signature, stored)
    except InvalidSignature:
        return Trust(False, f"signature does not match manifest.json (key {fp}): the"
                            " manifest or its signature was changed")
    return Trust(True)


def trust_of(manifest: Manifest, keys: dict[str, Ed25519PublicKey]) -> Trust:
    """The trust of a manifest read from storage (repository.read_manifest keeps its bytes
    and its signature)."""
    if manifest.stored is None:
        return Trust(False, "manifest bytes not kept")
    return check(manifest.stored, manifest.detached_signature, keys)
