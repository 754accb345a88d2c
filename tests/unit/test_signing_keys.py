"""kbackup.signing on its own: the key file, signing a manifest, and every verdict of check()."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kbackup import signing
from kbackup.errors import Invalid
from kbackup.repository import Manifest, encode_manifest


def manifest() -> Manifest:
    return Manifest(id="20261203T020000Z-3fa9c1", job="shop", trigger="manual", host="db1",
                    kbackup_version="0.1.0", started_at="2026-12-03T02:00:00Z",
                    finished_at="2026-12-03T02:00:04Z", components=[])


def test_the_key_is_made_once_private_and_signs_what_is_stored(tmp_path: Path) -> None:
    signer = signing.signer(tmp_path)
    key_file = tmp_path / "signing" / "ed25519.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert signing.signer(tmp_path).fingerprint == signer.fingerprint  # not made again
    m = manifest()
    signature = signer.sign_manifest(m)
    stored = encode_manifest(m)
    assert json.loads(stored)["signature"] == {"algorithm": "ed25519",
                                                "key": signer.fingerprint}
    assert len(signature) == 64
    keys = signing.keyring(tmp_path)
    assert signing.check(stored, signature, keys) == signing.Trust(True)
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)
    import hashlib
    assert signer.fingerprint == hashlib.sha256(raw).hexdigest()


def test_every_way_a_manifest_is_not_trusted_says_why(tmp_path: Path) -> None:
    signer = signing.signer(tmp_path)
    keys = signing.keyring(tmp_path)
    m = manifest()
    signature = signer.sign_manifest(m)
    stored = encode_manifest(m)
    changed = stored.replace(b'"shop"', b'"shoq"')
    verdict = signing.check(changed, signature, keys)
    assert not verdict.trusted and verdict.state == "untrusted"
    assert verdict.reason == (f"signature does not match manifest.json (key"
                              f" {signer.fingerprint}): the manifest or its signature was"
                              " changed")
    assert signing.check(stored, None, keys).reason == (
        "no signature (manifest.json.sig is missing)")
    unsigned = encode_manifest(manifest())
    assert signing.check(unsigned, signature, keys).reason == (
        "no signature (manifest.json names no signing key)")
    other = signing.Signer(Ed25519PrivateKey.generate(), "f" * 64)
    m2 = manifest()
    forged = other.sign_manifest(m2)
    reason = signing.check(encode_manifest(m2), forged, keys).reason
    assert reason is not None and reason.startswith(f"signed by unknown key {'f' * 64} ")
    assert signing.check(b"[1]", signature, keys).reason == "manifest.json is not a JSON object"


def test_a_bad_key_file_is_one_line_naming_it(tmp_path: Path) -> None:
    key_file = tmp_path / "signing" / "ed25519.key"
    key_file.parent.mkdir()
    key_file.write_text("not a key\n")
    with pytest.raises(signing.SigningError) as raised:
        signing.signer(tmp_path)
    assert str(raised.value) == f"signing key {key_file}: not an unencrypted PEM private key"
    key_file.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(signing.SigningError, match=f"^signing key {key_file}: not an Ed25519"
                                                   " key$"):
        signing.signer(tmp_path)


def test_rotation_keeps_the_old_public_key_and_imports_are_checked(tmp_path: Path) -> None:
    old = signing.signer(tmp_path)
    m = manifest()
    old_signature = old.sign_manifest(m)
    rotated = signing.rotate(tmp_path)
    assert rotated["old_fingerprint"] == old.fingerprint != rotated["fingerprint"]
    assert signing.signer(tmp_path).fingerprint == rotated["fingerprint"]
    keys = signing.keyring(tmp_path)
    assert signing.check(encode_manifest(m), old_signature, keys).trusted
    assert (tmp_path / "signing" / "trusted" / f"{old.fingerprint}.pub").exists()
    with pytest.raises(Invalid, match="^public_key_pem: not a PEM public key$"):
        signing.import_public(tmp_path, "hello")
    # A broken file in the keyring trusts nothing and breaks nothing.
    (tmp_path / "signing" / "trusted" / "junk.pub").write_text("junk")
    assert set(signing.keyring(tmp_path)) == {old.fingerprint, rotated["fingerprint"]}
    assert signing.describe(tmp_path)["trusted"] == [old.fingerprint]
