"""One-time security codes: generation and keyed hashing.

A code lives minutes to weeks and allows only a few tries, so a keyed HMAC is enough (no
argon2). Each hash carries its own random nonce, stored as "<nonce>$<hex digest>" in
SecurityCode.code_hash (81 characters), so equal codes never share a hash and verifying
needs no extra column; after a pepper rotation it is tagged with the pepper's id.
"""

import hashlib
import hmac
import re
import secrets

from cpms_admin.errors import InvalidInput
from cpms_admin.pepper import Peppers, as_peppers, tagged, untagged

CODE_LENGTH = 6
_CODE = re.compile(r"[0-9]{6}")  # ASCII only
_KEY_LABEL = b"cpms-code-v1"  # separates the code key from the PIN pre-hash key


def generate_code() -> str:
    """Six digits from the OS's secure generator, zero-padded ("004213" is a valid code)."""
    return f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"


def check_code_format(code: str) -> None:
    """Raise InvalidInput unless `code` is exactly 6 ASCII digits (the code is never echoed)."""
    if not _CODE.fullmatch(code):
        raise InvalidInput("security code must be exactly 6 digits (0-9)")


def _digest(pepper: bytes, nonce: str, code: str) -> str:
    if not pepper:
        raise ValueError("the pepper must not be empty")
    key = hmac.new(pepper, _KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(key, f"{nonce}:{code}".encode(), hashlib.sha256).hexdigest()


def hash_code(*, pepper: bytes | Peppers, code: str) -> str:
    """The value to store for `code`: a fresh nonce and the keyed digest, "<nonce>$<hex>",
    tagged with the current pepper's id after a rotation ("k2$<nonce>$<hex>")."""
    check_code_format(code)
    peppers = as_peppers(pepper)
    nonce = secrets.token_hex(8)
    digest = _digest(peppers.current, nonce, code)
    return tagged(peppers.current_id, "$", f"{nonce}${digest}")


def verify_code(*, pepper: bytes | Peppers, code: str, stored: str) -> bool:
    """Does `code` match `stored` (from hash_code), with the pepper that made it? False for
    a malformed stored value."""
    key_id, value = untagged(stored, "$")
    nonce, sep, digest = value.partition("$")
    if not sep:
        return False
    secret = as_peppers(pepper).get(key_id)
    return hmac.compare_digest(_digest(secret, nonce, code).encode(), digest.encode())
