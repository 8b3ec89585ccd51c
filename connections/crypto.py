"""Encryption of connection secrets at rest (Fernet, key from `VMX_ENCRYPTION_KEY`).

Invariant: a token either decrypts with one of the configured keys or raises `EncryptionKeyError`
naming what went wrong; garbage is never returned. Several comma-separated keys may be configured
to rotate: the first encrypts, any decrypts.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class EncryptionKeyError(Exception):
    """The encryption key is missing, malformed or not the one the secrets were written with."""


@lru_cache(maxsize=4)
def _fernet_for(key_setting: str) -> MultiFernet:
    keys = [part.strip() for part in key_setting.split(",") if part.strip()]
    if not keys:
        raise EncryptionKeyError(
            "VMX_ENCRYPTION_KEY is not set; connection secrets cannot be encrypted or decrypted. "
            "Generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise EncryptionKeyError(
            "VMX_ENCRYPTION_KEY is malformed: each key must be 32 url-safe base64-encoded bytes"
        ) from exc


def _fernet() -> MultiFernet:
    return _fernet_for(settings.VMX_ENCRYPTION_KEY)


def encryption_key_validate() -> None:
    """Raise `EncryptionKeyError` unless a usable key is configured."""
    _fernet()


def secret_encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def secret_decrypt(token: str, *, owner: str) -> str:
    """Decrypt `token`; `owner` names the object in the error (never the secret itself)."""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise EncryptionKeyError(
            f"cannot decrypt the secrets of {owner}: VMX_ENCRYPTION_KEY is not the key they were "
            "encrypted with (restore the old key, or list it after the new one to rotate)"
        ) from exc
