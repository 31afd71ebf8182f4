"""Ed25519 key pairs kept in owner-only PEM files: the engine's request identity and the token issuer.

``podium up`` keeps both under ``<data dir>/keys/`` and reuses them on every start:

- ``request-identity.pem``: the engine signs every request to a deployment with it (restate-server's
  ``request-identity-private-key-pem-file``); deployments verify the signature with its public half, in
  the engine's ``publickeyv1_…`` form (restate-sdk ``identity_keys``);
- ``token-issuer.pem``: ``podium token`` and the gateway's token endpoint sign access tokens (JWT,
  EdDSA) with it; the gateway verifies them with its public half.

A private key file is created with mode 0600 in a 0700 folder, and refused when anyone but its owner
can read it (as ssh refuses a private key others can read).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RETIRED_DIR = "retired"
"""Public halves of replaced keys, under the keys folder: still trusted until what they signed expires."""
REQUEST_IDENTITY_FILE = "request-identity.pem"
"""The engine's request-signing key, under the keys folder."""
TOKEN_ISSUER_FILE = "token-issuer.pem"
"""The access-token signing key, under the keys folder."""


class KeyFileError(RuntimeError):
    """A key file is missing, unreadable, not an Ed25519 private key, or readable by others."""


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key pair whose private half lives in :attr:`path`."""

    path: Path
    """The private key, PKCS#8 PEM, owner-only."""
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()

    @property
    def public_pem(self) -> bytes:
        """The public half as SubjectPublicKeyInfo PEM."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def restate_public_key(self) -> str:
        """The public half as restate-sdk's ``identity_keys`` expect it: ``publickeyv1_<base58>``."""
        return restate_public_key(self.public_key)

    @property
    def key_id(self) -> str:
        """A short id for the public half (the JWT ``kid``); see :func:`key_id`."""
        return key_id(self.public_key)

    def retire(self, folder: Path) -> Path:
        """Keep the public half in ``folder`` (as ``<key id>.pub.pem``) so what it signed still verifies."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / f"{self.key_id}.pub.pem"
        path.write_bytes(self.public_pem)
        return path

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        """Read the private key at ``path``.

        Raises:
            KeyFileError: Missing, readable by group or others, or not an Ed25519 PEM private key.
        """
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeyFileError(f"{path} does not exist") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} can be read by others (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`"
            )
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a PEM private key without a passphrase: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(path, key)

    @classmethod
    def create(cls, path: Path) -> KeyPair:
        """Generate a key pair and write its private half to ``path`` (which must not exist), mode 0600."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        return cls(path, key)

    @classmethod
    def load_or_create(cls, path: Path) -> KeyPair:
        """The key pair at ``path``, created on first use."""
        try:
            return cls.create(path)
        except FileExistsError:
            return cls.load(path)


def _base58(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base58.b58encode(raw).decode("ascii")


def restate_public_key(public_key: Ed25519PublicKey) -> str:
    """A public key as restate-sdk's ``identity_keys`` expect it: ``publickeyv1_<base58>``."""
    return "publickeyv1_" + _base58(public_key)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short id for a public key (a JWT's ``kid``): the first 16 characters of its base58 form."""
    return _base58(public_key)[:16]


def load_public_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys (``*.pub.pem``) in ``folder``, by key id; none if it does not exist.

    Raises:
        KeyFileError: A file that is not an Ed25519 public key.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(folder.glob("*.pub.pem")) if folder.is_dir() else []:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as exc:
            raise KeyFileError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


def keys_dir(data_dir: Path) -> Path:
    """Where ``podium up`` keeps its keys under a data directory."""
    return data_dir / "keys"
