"""Encryption at rest with GnuPG: a symmetric passphrase, or public-key recipients.

The data path streams through a gpg process as one more pipeline stage (compression off in
gpg: zstd already did it); plaintext never touches the disk. python-gnupg handles the keys:
importing public keys, checking at start that every recipient exists, can encrypt, and is
neither expired nor revoked. The server needs no private key in recipients mode, so a stolen
server cannot read its own backups; restore and verify get the private key from a keyring
directory or a key file given for that purpose.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbackup.config import Config, EncryptionConfig, JobConfig, read_secret_file
from kbackup.errors import CryptoError
from kbackup.process import child_env, error_reason

GPG = "gpg"
BASE_ARGS = ["--batch", "--no-tty", "--quiet", "--yes", "--no-greeting",
             "--pinentry-mode", "loopback", "--no-symkey-cache"]


class KeyProblem(CryptoError):
    """A key or secret is missing or unusable; one line naming the key or file."""


class GpgFailed(CryptoError):
    """gpg stopped with an error (wrong passphrase, no secret key, corrupt data)."""


def passphrase_from(config: EncryptionConfig, what: str = "passphrase") -> str:
    if config.passphrase_file is not None:
        try:
            value = read_secret_file(config.passphrase_file)
        except ValueError as exc:
            raise KeyProblem(f"encryption {what}: {exc}") from None
        if not value:
            raise KeyProblem(f"encryption {what}: {config.passphrase_file} is empty")
        return value
    if config.passphrase_credential:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise KeyProblem(f"encryption {what}: credential {config.passphrase_credential!r}"
                             " needs $CREDENTIALS_DIRECTORY (LoadCredential= in the unit)")
        path = Path(directory) / config.passphrase_credential
        try:
            value = read_secret_file(path)
        except ValueError as exc:
            raise KeyProblem(f"encryption {what}: {exc}") from None
        if not value:
            raise KeyProblem(f"encryption {what}: credential {path} is empty")
        return value
    raise KeyProblem(f"encryption {what}: set passphrase_file or passphrase_credential")


def _homedir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def keyring_dir(config: Config, encryption: EncryptionConfig) -> Path:
    return encryption.keyring_dir or (config.daemon.state_dir / "gnupg")


def _gnupg(homedir: Path) -> Any:
    import gnupg  # python-gnupg: key handling only, the data path runs gpg itself

    return gnupg.GPG(gnupghome=str(_homedir(homedir)))


def check_recipients(config: Config, encryption: EncryptionConfig) -> list[dict[str, Any]]:
    """Import public_key_files and check every recipient; KeyProblem names the first bad one."""
    home = keyring_dir(config, encryption)
    gpg = _gnupg(home)
    for key_file in encryption.public_key_files:
        try:
            data = key_file.read_bytes()
        except OSError as exc:
            raise KeyProblem(f"encryption public_key_files: cannot read {key_file}:"
                             f" {exc.strerror}") from None
        result = gpg.import_keys(data)
        if not result.fingerprints:
            raise KeyProblem(f"encryption public_key_files: {key_file} holds no OpenPGP key")
    keys = {k["fingerprint"]: k for k in gpg.list_keys()}
    found = []
    now = time.time()
    for fingerprint in encryption.recipients:
        key = keys.get(fingerprint.upper())
        if key is None:
            raise KeyProblem(f"encryption recipient {fingerprint}: no such public key in {home}"
                             " (add it to public_key_files)")
        if key.get("trust") == "r":
            raise KeyProblem(f"encryption recipient {fingerprint}: the key is revoked")
        expires = key.get("expires")
        if key.get("trust") == "e" or (expires and float(expires) < now):
            raise KeyProblem(f"encryption recipient {fingerprint}: the key has expired")
        can_encrypt = "e" in key.get("cap", "").lower() or any(
            "e" in s[1] for s in key.get("subkeys", []) if len(s) > 1)
        if not can_encrypt:
            raise KeyProblem(f"encryption recipient {fingerprint}: the key cannot encrypt")
        found.append({"fingerprint": fingerprint.upper(), "uids": key.get("uids", []),
                      "expires": expires or None})
    return found


def check_job_keys(config: Config, job: JobConfig) -> dict[str, Any]:
    """What `keys check` reports for one job; raises KeyProblem when unusable."""
    encryption = job.encryption
    if encryption.mode == "none":
        return {"job": job.name, "mode": "none"}
    if encryption.mode == "gpg-symmetric":
        passphrase_from(encryption)
        return {"job": job.name, "mode": encryption.mode, "cipher": encryption.cipher,
                "passphrase": str(encryption.passphrase_file or
                                  f"credential {encryption.passphrase_credential}")}
    recipients = check_recipients(config, encryption)
    return {"job": job.name, "mode": encryption.mode, "cipher": encryption.cipher,
            "recipients": recipients}


# ---------------------------------------------------------------------------- data path


class GpgProcess:
    """gpg as a synchronous stream stage: write input, collect output from a reader thread."""

    def __init__(self, argv: list[str], passphrase: str | None):
        fds: tuple[int, ...] = ()
        read_fd = write_fd = -1
        if passphrase is not None:
            read_fd, write_fd = os.pipe()
            argv = argv[:1] + ["--passphrase-fd", str(read_fd)] + argv[1:]
            fds = (read_fd,)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=fds, env=child_env(),
                                     start_new_session=True)
        if passphrase is not None:
            os.close(read_fd)
            os.write(write_fd, passphrase.encode() + b"\n")
            os.close(write_fd)
        self.output: collections.deque[bytes] = collections.deque()
        self.errors: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.err_reader = threading.Thread(target=self._read_errors, daemon=True)
        self.reader.start()
        self.err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(1 << 20):  # type: ignore[attr-defined]
            self.output.append(chunk)

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line.decode(errors="replace").strip())
            del self.errors[:-20]

    def _take(self) -> bytes:
        parts = []
        while self.output:
            parts.append(self.output.popleft())
        return b"".join(parts)

    def _error(self) -> Exception:
        """A wrong key or passphrase is a KeyProblem (the backup may be fine); the rest is
        GpgFailed (corrupt or unreadable data)."""
        messages = [e for e in self.errors if e]
        for marker in ("bad passphrase", "no secret key", "bad session key"):
            found = next((e for e in messages if marker in e.lower()), None)
            if found:
                return KeyProblem(f"gpg cannot decrypt: {found.removeprefix('gpg: ')}"
                                  " (wrong passphrase or key)")
        text = error_reason(messages, f"exit {self.proc.returncode}")
        return GpgFailed(f"gpg: {text.removeprefix('gpg: ')}")

    def process(self, data: bytes) -> bytes:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self.proc.wait()
            self.err_reader.join(5)
            raise self._error() from None
        return self._take()

    def finish(self) -> bytes:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.reader.join()
        code = self.proc.wait()
        self.err_reader.join(5)
        if code != 0:
            raise self._error()
        return self._take()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class GpgStage:
    """gpg as a pipeline stage, encrypting or decrypting as argv says; meta is what the
    manifest records about it (empty when decrypting)."""

    argv: list[str]
    passphrase: str | None
    meta: dict[str, Any]
    extension: str = ".gpg"

    def __post_init__(self) -> None:
        self._gpg = GpgProcess(self.argv, self.passphrase)

    def process(self, data: bytes) -> bytes:
        return self._gpg.process(data)

    def finish(self) -> bytes:
        return self._gpg.finish()

    def close(self) -> None:
        self._gpg.close()

    def describe(self) -> dict[str, object]:
        return dict(self.meta)


def encryption_meta(encryption: EncryptionConfig) -> dict[str, Any]:
    """What the manifest records: mode, cipher, recipients. Never a passphrase."""
    if encryption.mode == "none":
        return {"mode": "none"}
    meta: dict[str, Any] = {"mode": encryption.mode, "cipher": encryption.cipher}
    if encryption.mode == "gpg-recipients":
        meta["recipients"] = [r.upper() for r in encryption.recipients]
    return meta


def encrypt_stage(config: Config, encryption: EncryptionConfig) -> GpgStage | None:
    if encryption.mode == "none":
        return None
    home = _homedir(keyring_dir(config, encryption))
    argv = [GPG, *BASE_ARGS, "--homedir", str(home), "--compress-algo", "none",
            "--cipher-algo", encryption.cipher, "--output", "-"]
    meta = encryption_meta(encryption)
    if encryption.mode == "gpg-symmetric":
        argv += ["--s2k-digest-algo", "SHA512", "--symmetric"]
        return GpgStage(argv, passphrase_from(encryption), meta)
    argv += ["--trust-model", "always", "--encrypt"]
    for fingerprint in encryption.recipients:
        argv += ["--recipient", fingerprint]
    return GpgStage(argv, None, meta)


class Decryptor:
    """What restore and verify need to decrypt: a homedir with the secret key (or a passphrase
    for symmetric backups). Temporary homedirs for imported key files are removed on close()."""

    def __init__(self, config: Config, encryption: EncryptionConfig,
                 gpg_homedir: Path | None = None, passphrase_file: Path | None = None):
        # A passphrase file given for this restore wins: after a rotation, old backups need
        # the old passphrase while the job's config names the new one.
        if passphrase_file is not None:
            encryption = encryption.model_copy(update={"passphrase_file": passphrase_file,
                                                       "passphrase_credential": None})
        self.encryption = encryption
        self.passphrase: str | None = None
        self.cleanup: Path | None = None
        self.homedir = keyring_dir(config, encryption)
        self.config = config
        self.gpg_homedir = gpg_homedir

    def for_backup(self, meta: dict[str, Any]) -> tuple[Path, str | None]:
        mode = meta.get("mode")
        if mode == "gpg-symmetric":
            return _homedir(self.homedir), passphrase_from(self.encryption)
        if mode != "gpg-recipients":
            raise KeyProblem(f"unknown encryption mode {mode!r} in the manifest")
        key_passphrase = None
        if self.encryption.secret_key_passphrase_file is not None:
            try:
                key_passphrase = read_secret_file(self.encryption.secret_key_passphrase_file)
            except ValueError as exc:
                raise KeyProblem(f"encryption secret_key_passphrase_file: {exc}") from None
        if self.gpg_homedir is not None:
            return self.gpg_homedir, key_passphrase
        if self.encryption.secret_keyring_dir is not None:
            return self.encryption.secret_keyring_dir, key_passphrase
        if self.encryption.secret_key_file is not None:
            if self.cleanup is None:
                base = self.config.daemon.staging_dir or self.config.daemon.state_dir
                base.mkdir(parents=True, exist_ok=True)
                self.cleanup = Path(tempfile.mkdtemp(prefix="gpg-", dir=base))
                gpg = _gnupg(self.cleanup)
                try:
                    data = self.encryption.secret_key_file.read_bytes()
                except OSError as exc:
                    raise KeyProblem(f"encryption secret_key_file: cannot read"
                                     f" {self.encryption.secret_key_file}: {exc.strerror}"
                                     ) from None
                if not gpg.import_keys(data, passphrase=key_passphrase).fingerprints:
                    raise KeyProblem(f"encryption secret_key_file:"
                                     f" {self.encryption.secret_key_file} holds no key")
            return self.cleanup, key_passphrase
        needed = ", ".join(meta.get("recipients", []))
        raise KeyProblem(f"this backup is encrypted to {needed}: give a private key with"
                         " --gpg-homedir, [encryption] secret_keyring_dir or secret_key_file")

    def check_secret_key(self, meta: dict[str, Any]) -> None:
        """Before anything is dropped: is one of the backup's recipients' secret keys here?"""
        if meta.get("mode") != "gpg-recipients":
            self.for_backup(meta)
            return
        home, _ = self.for_backup(meta)
        secret = {k["fingerprint"] for k in _gnupg(home).list_keys(secret=True)}
        subkeys = {s[2] for k in _gnupg(home).list_keys(secret=True)
                   for s in k.get("subkeys", []) if len(s) > 2}
        wanted = set(meta.get("recipients", []))
        if not (wanted & (secret | subkeys)):
            raise KeyProblem(f"no private key for {', '.join(sorted(wanted))} in {home}:"
                             " this backup cannot be decrypted with the keys given")

    def stage(self, meta: dict[str, Any]) -> GpgStage:
        home, passphrase = self.for_backup(meta)
        argv = [GPG, *BASE_ARGS, "--homedir", str(home), "--decrypt", "--output", "-"]
        return GpgStage(argv, passphrase, {})

    def close(self) -> None:
        if self.cleanup is not None:
            subprocess.run(["gpgconf", "--homedir", str(self.cleanup), "--kill", "gpg-agent"],
                           capture_output=True, check=False)
            shutil.rmtree(self.cleanup, ignore_errors=True)
            self.cleanup = None
