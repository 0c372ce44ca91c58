"""Password hashing with argon2id (argon2-cffi, the reference implementation's binding; OWASP's first choice).

No password is ever stored, logged or put in a URL: the store keeps the encoded hash only
(``$argon2id$v=19$m=...,t=...,p=...$salt$hash``, parameters and salt included).
"""
from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.errors import check_param

MIN_LENGTH = 8
_HASHER = PasswordHasher()  # argon2id, RFC 9106's second recommended parameters (64 MiB, t=3, p=4)
# verified when the account does not exist, so that a wrong name takes as long as a wrong password
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


def check_password(password: object) -> str:
    """``password`` when acceptable: a string of at least :data:`MIN_LENGTH` characters, no NUL byte."""
    ok = isinstance(password, str) and len(password) >= MIN_LENGTH and "\x00" not in password
    # never echo the password itself in the error
    check_param("the accounts", "password", "<hidden>", ok,
                f"a string of at least {MIN_LENGTH} characters without NUL bytes")
    return password  # type: ignore[return-value]


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (a new random salt each call)."""
    return _HASHER.hash(check_password(password))


def verify_password(encoded: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored hash ``encoded`` (constant work when ``encoded`` is None)."""
    try:
        return _HASHER.verify(encoded if encoded else _DUMMY, password) and bool(encoded)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    """Whether a hash was made with weaker parameters than the current ones (rehash at the next sign-in)."""
    return _HASHER.check_needs_rehash(encoded)


def generate_password() -> str:
    """A random password for demo or first accounts (about 72 bits, URL-safe characters)."""
    return secrets.token_urlsafe(9)
