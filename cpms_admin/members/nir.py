"""The NIR (French social security number): parse, show grouped, mask."""

from stdnum import exceptions as stdnum_errors
from stdnum.fr import nir as stdnum_nir

from cpms_admin.errors import FieldError

_REASONS = {
    stdnum_errors.InvalidLength: "it must have 15 characters (13 digits and a 2-digit key)",
    stdnum_errors.InvalidFormat: "it must be 15 digits (2A/2B allowed for Corsica)",
    stdnum_errors.InvalidChecksum: "its 2-digit key does not match (check for a typo)",
}


def parse_nir(raw: str) -> str:
    """Return the 15 compact characters of a valid NIR, or raise FieldError with the reason.

    Spaces, dots and dashes are accepted as separators; `2a`/`2b` are upper-cased.
    """
    compact = raw.replace("-", "").replace(".", "").replace(" ", "").strip().upper()
    try:
        return str(stdnum_nir.validate(compact))
    except stdnum_errors.ValidationError as exc:
        reason = _REASONS.get(type(exc), str(exc))
        raise FieldError("nir", f"invalid NIR {raw.strip()!r}: {reason}") from None


def format_nir(nir: str) -> str:
    """`185057800608491` -> `1 85 05 78 006 084 91`."""
    return str(stdnum_nir.format(nir))


def mask_nir(nir: str) -> str:
    """Keep sex, birth year and key, hide the rest: `1 85 •• •• ••• ••• 91`."""
    return f"{nir[0]} {nir[1:3]} •• •• ••• ••• {nir[13:]}"
