"""PIN hashes carried over from a previous system (argon2, bcrypt, PBKDF2-SHA256).

Such a hash is over the raw PIN, with no pepper: stored as it came, a stolen database would
give each member's PIN to a brute force of a million guesses (minutes for a bcrypt of cost
4). So the importer stores it sealed with the current pepper (AES-256-GCM, the key derived
from the pepper): `legacy:k<id>:<nonce, ciphertext and tag, base64>`, which only the holder
of the pepper can open; the first successful login replaces it with one of ours. Hashes
stored as they came (`legacy:$2b$...`, imports before 3 December) are still verified.
Parameters are capped so an imported hash cannot make each login take seconds.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cpms_admin.errors import InvalidInput
from cpms_admin.pepper import Peppers, untagged

LEGACY_PREFIX = "legacy:"
MAX_STORED_LENGTH = 255  # Account.pin_hash
_SEAL_LABEL = b"cpms-legacy-pin-hash-v1"
_NONCE, _TAG = 12, 16

_UNKNOWN = "unknown PIN hash format: must be argon2, bcrypt or PBKDF2-SHA256"
# 22-character salt (its last character carries 2 bits, hence .Oeu) then a 31-character hash.
_BCRYPT = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")
_PBKDF2_PASSLIB = re.compile(r"\$pbkdf2-sha256\$([0-9]+)\$([./A-Za-z0-9]*)\$([./A-Za-z0-9]+)")
_PBKDF2_PHC = re.compile(r"\$pbkdf2-sha256\$([a-z0-9=,]+)\$([+/A-Za-z0-9]*)\$([+/A-Za-z0-9]+)")
_PHC_PARAMS = re.compile(r"i=([0-9]+)(?:,l=([0-9]+))?")


@dataclass(frozen=True)
class _Ceilings:
    """The costliest legacy hash accepted: argon2's memory (KiB) and memory times passes,
    bcrypt's cost, PBKDF2's rounds."""

    argon2_memory_kib: int
    argon2_work: int
    bcrypt_cost: int
    pbkdf2_rounds: int


# What an import accepts: each check under about half a second here (bcrypt 13 about 0.5 s;
# argon2 about 1 ms per MiB and pass; PBKDF2-SHA256 1,000,000 rounds about 0.4 s), as a
# login with a costlier hash would take seconds and tell that member from an unknown NIR.
_AT_IMPORT = _Ceilings(256 * 1024, 512 * 1024, 13, 1_000_000)
# What a login still verifies: the ceilings imports had before 3 December, so that no hash
# already stored stops working.
_AT_LOGIN = _Ceilings(1024 * 1024, 20 * 1024 * 1024, 16, 5_000_000)
_BCRYPT_MIN_COST, _PBKDF2_MIN_ROUNDS = 4, 1000
_ARGON2_MIN_SALT, _ARGON2_MIN_DIGEST = 8, 4  # bytes: argon2's own least


def _b64(text: str, *, adapted: bool) -> bytes:
    """Unpadded base64; passlib's "adapted" alphabet uses '.' for '+'."""
    if adapted:
        text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _parse_pbkdf2(value: str, ceilings: _Ceilings) -> tuple[int, bytes, bytes]:
    """(rounds, salt, digest) from passlib's or the PHC form; ValueError when malformed."""
    passlib = _PBKDF2_PASSLIB.fullmatch(value)
    if passlib:
        rounds, salt, digest = int(passlib[1]), passlib[2], passlib[3]
        adapted, length = True, None
    else:
        phc = _PBKDF2_PHC.fullmatch(value)
        params = _PHC_PARAMS.fullmatch(phc[1]) if phc else None
        if phc is None or params is None:
            raise ValueError("malformed PBKDF2-SHA256 hash")
        rounds, salt, digest = int(params[1]), phc[2], phc[3]
        adapted, length = False, int(params[2]) if params[2] else None
    try:
        salt_bytes, digest_bytes = _b64(salt, adapted=adapted), _b64(digest, adapted=adapted)
    except binascii.Error:
        raise ValueError("malformed PBKDF2-SHA256 hash: bad base64") from None
    if len(digest_bytes) < 16 or length not in (None, len(digest_bytes)):
        raise ValueError("malformed PBKDF2-SHA256 hash: bad digest length")
    if not _PBKDF2_MIN_ROUNDS <= rounds <= ceilings.pbkdf2_rounds:
        raise ValueError(
            "PBKDF2-SHA256 rounds out of the accepted range "
            f"({_PBKDF2_MIN_ROUNDS:,} to {ceilings.pbkdf2_rounds:,})"
        )
    return rounds, salt_bytes, digest_bytes


def _check(value: str, ceilings: _Ceilings) -> None:
    """Raise ValueError with the reason unless `value` is a usable legacy hash."""
    if value.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        from argon2 import extract_parameters
        from argon2.exceptions import InvalidHashError

        try:
            params = extract_parameters(value)  # the parameters only: not salt nor digest
            salt, digest = (_b64(part, adapted=False) for part in value.rsplit("$", 2)[1:])
        except (InvalidHashError, ValueError):
            raise ValueError("malformed argon2 hash") from None
        if len(salt) < _ARGON2_MIN_SALT or len(digest) < _ARGON2_MIN_DIGEST:
            raise ValueError("malformed argon2 hash: salt or digest too short")
        work = params.memory_cost * params.time_cost
        if params.memory_cost > ceilings.argon2_memory_kib or work > ceilings.argon2_work:
            raise ValueError(
                "argon2 hash parameters too costly to verify at login (at most "
                f"{ceilings.argon2_memory_kib // 1024} MiB, and "
                f"{ceilings.argon2_work // 1024} MiB times passes)"
            )
    elif value.startswith(("$2a$", "$2b$", "$2y$")):
        bcrypt = _BCRYPT.fullmatch(value)
        if bcrypt is None:
            raise ValueError("malformed bcrypt hash")
        if not _BCRYPT_MIN_COST <= int(bcrypt[1]) <= ceilings.bcrypt_cost:
            raise ValueError(
                f"bcrypt cost out of the accepted range ({_BCRYPT_MIN_COST} to "
                f"{ceilings.bcrypt_cost})"
            )
    elif value.startswith("$pbkdf2-sha256$"):
        _parse_pbkdf2(value, ceilings)
    else:
        raise ValueError(_UNKNOWN)


def fits_sealed(value: str) -> bool:
    """Whether `value`, sealed, fits in Account.pin_hash."""
    return _sealed_length(value) <= MAX_STORED_LENGTH


def legacy_hash_problem(value: str) -> str | None:
    """For the importer: None when `value` is an accepted, well-formed legacy hash, else why not."""
    if not fits_sealed(value):
        return "PIN hash too long to store"
    try:
        _check(value, _AT_IMPORT)
    except ValueError as exc:
        return str(exc)
    return None


def import_legacy_hash(value: str, peppers: Peppers) -> str:
    """The value to store in Account.pin_hash for an imported hash: sealed with the current
    pepper (see the module docstring); InvalidInput if unusable."""
    problem = legacy_hash_problem(value)
    if problem is not None:
        raise InvalidInput(problem)
    return seal_legacy_hash(value, peppers)


def seal_legacy_hash(value: str, peppers: Peppers) -> str:
    """`value`, a legacy hash already checked (`legacy_hash_problem`), as Account.pin_hash
    stores it: sealed with the current pepper."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key_id = peppers.current_id
    nonce = secrets.token_bytes(_NONCE)
    sealed = nonce + AESGCM(_seal_key(peppers, key_id)).encrypt(nonce, value.encode(), None)
    token = base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")
    return f"{LEGACY_PREFIX}k{key_id}:{token}"


def _seal_key(peppers: Peppers, key_id: int) -> bytes:
    return hmac.digest(peppers.get(key_id), _SEAL_LABEL, hashlib.sha256)


def _sealed_length(value: str) -> int:
    """The length of `value` once sealed and stored (at most a 3-digit pepper id)."""
    return len(LEGACY_PREFIX) + len("k999:") + -(-4 * (_NONCE + len(value) + _TAG) // 3)


def _opened(stored: str, peppers: Peppers) -> str | None:
    """The legacy hash of `stored` (without its prefix): opened with its pepper when sealed,
    as it is when it came unsealed; None when it cannot be opened (sealed with another
    pepper of the same id, or damaged). A pepper id no longer at hand is NotReady."""
    if stored.startswith("$"):
        return stored
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key_id, token = untagged(stored, ":")
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = _seal_key(peppers, key_id)
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], None).decode()
    except (ValueError, InvalidTag, binascii.Error):  # a pepper no longer at hand: NotReady
        return None


def verify_legacy(stored: str, pin: str, peppers: Peppers) -> bool:
    """Does `pin` match the legacy hash `stored` (without the prefix, sealed or not)? False
    when it cannot be opened or is malformed."""
    value = _opened(stored, peppers)
    if value is None:
        return False
    try:
        _check(value, _AT_LOGIN)
    except ValueError:
        return False
    secret = pin.encode("utf-8")
    if value.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return PasswordHasher().verify(value, secret)
        except (VerificationError, InvalidHashError):
            return False
    if value.startswith("$2"):
        import bcrypt

        # bcrypt's $2y$ (PHP) is the same algorithm as $2b$.
        try:
            return bcrypt.checkpw(secret, ("$2b$" + value[4:]).encode("ascii"))
        except ValueError:  # a salt the regex let through but bcrypt refuses
            return False
    rounds, salt, digest = _parse_pbkdf2(value, _AT_LOGIN)
    computed = hashlib.pbkdf2_hmac("sha256", secret, salt, rounds, dklen=len(digest))
    return hmac.compare_digest(computed, digest)
