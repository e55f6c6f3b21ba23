"""Whether a file that reads as Windows-1252 was saved in another 8-bit code page.

Every byte of Excel's "CSV (MS-DOS)" (code page 850), "CSV (Macintosh)" (Mac Roman) and of
ISO-8859-15 is a Windows-1252 character too, so such a file reads without an error, and its
French letters come out as `H‚lŠne`, `ChloŽ`, `L½uillet`, valid characters each: an import
would store them so, without a word. The bytes tell: where Windows-1252 keeps its accented
letters (é is E9), code page 850 and Mac Roman keep box drawings and rare letters, and they
keep theirs (é is 82, 8E) where Windows-1252 keeps punctuation that French text never puts
inside a word. Decided once for the whole file, from the bytes next to an ASCII letter.
"""

import re
from collections import Counter
from pathlib import Path

from cpms_admin.errors import InvalidInput

# The code pages a file may have been saved in, by Windows-1252's bytes next to a letter:
# its punctuation 80-9F, but for what French text in Windows-1252 puts in words (’ œ Œ – —
# … “ ” ‘ €) and its letters (Š š Ž ž Ÿ: Šimek, Beneš, L'HAŸ-LES-ROSES), for code page 850
# and Mac Roman; what ISO-8859-15 has for œ, Œ, Ÿ, € and Š (Windows-1252's ½ ¼ ¾ ¤ ¦).
_DOS_OR_MAC = rb"[\x81-\x84\x86-\x89\x8b\x8d\x8f\x90\x95\x98\x99\x9b\x9d]"
_LATIN_9 = rb"[\xa4\xa6\xbc-\xbe]"
_ACCENTED = rb"[\xc0-\xff]"  # Windows-1252's (and ISO-8859-15's) accented letters
# Windows-1252's capitals Š Ž Ÿ are Mac Roman's è é ü (and code page 850's è Ä Ü): after a
# small letter (`LefŠvre`, `ChloŽ`) they are those, never a capital inside a word. Its small
# letters are where Mac Roman keeps È Ê Ë Î Ï Ô: between capitals (`LEFéVRE` for LEFÈVRE, a
# file in capitals), they are those.
_CAPITAL_AFTER_SMALL = rb"(?<=[a-z])[\x8a\x8e\x9f]"
_SMALL_BETWEEN_CAPITALS = rb"(?<=[A-Z])[\xdf-\xf6\xf8-\xff](?=[A-Z])"


def _next_to_a_letter(byte: bytes) -> bytes:
    """`byte` after an ASCII letter, or before one where no other 8-bit byte precedes it:
    UTF-8's second bytes (the BC of `ü`, C3 BC, in `Müller`) belong to a row of another
    encoding, which is each value's problem (members.damage.read_twice), not the file's."""
    return rb"(?<=[A-Za-z])" + byte + rb"|(?<![\x80-\xff])" + byte + rb"(?=[A-Za-z])"


def _inside_a_word(byte: bytes) -> bytes:
    """`byte` between ASCII letters, or starting a word: `C½ur`, `¼uvre`, not `12½B`."""
    return rb"(?<=[A-Za-z])" + byte + rb"(?=[A-Za-z])|(?<![\w\x80-\xff])" + byte + rb"(?=[A-Za-z])"


_SIGNS = {
    "dos_or_mac": re.compile(
        rb"|".join((_next_to_a_letter(_DOS_OR_MAC), _CAPITAL_AFTER_SMALL, _SMALL_BETWEEN_CAPITALS))
    ),
    "latin_9": re.compile(_inside_a_word(_LATIN_9)),
    "accented": re.compile(_next_to_a_letter(_ACCENTED)),
    "in_capitals": re.compile(_SMALL_BETWEEN_CAPITALS),  # counted as a sign, not an accent
}
_SAVED_AS = {
    "cp850": '"CSV (MS-DOS)", code page 850',
    "mac_roman": '"CSV (Macintosh)", Mac Roman',
    "iso8859_15": "ISO-8859-15",
}
_FRENCH_LETTERS = frozenset("àâçéèêëîïôùûüÿœæÀÂÇÉÈÊËÎÏÔÙÛÜŸŒÆ")
_CHUNK = 1 << 18


def check_windows_1252(path: Path) -> None:
    """InvalidInput, naming the encoding to give, when `path`, which reads as Windows-1252,
    was saved in another of these code pages."""
    counts = dict.fromkeys(_SIGNS, 0)
    bytes_seen: Counter[int] = Counter()  # code page 850's or Mac Roman's, by value
    seen: dict[str, bytes] = {}  # the first word of each kind, to show
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if chunk.isascii():  # most of a member file: nothing to look at
                continue
            for kind, sign in _SIGNS.items():
                found = list(sign.finditer(chunk))
                counts[kind] += len(found)
                if found and kind not in seen:
                    seen[kind] = _word_around(chunk, found[0])
                if kind == "dos_or_mac":
                    bytes_seen.update(chunk[match.start()] for match in found)
    accented = counts["accented"] - counts["in_capitals"]
    # Two signs at least: one stray byte (`Dupont†`) in a file without accents proves nothing.
    if counts["dos_or_mac"] > max(accented, 1):
        codec = max(("cp850", "mac_roman"), key=lambda name: _letters(bytes_seen, name))
        if _letters(bytes_seen, codec):
            raise _misread(path, seen["dos_or_mac"], codec)
    elif counts["latin_9"]:
        raise _misread(path, seen["latin_9"], "iso8859_15")


def _letters(bytes_seen: Counter[int], codec: str) -> int:
    """How many of the bytes seen are French letters in `codec` (where the other may have
    a German one, `ChloÄ`, or a sign)."""
    return sum(
        count
        for value, count in bytes_seen.items()
        if bytes([value]).decode(codec) in _FRENCH_LETTERS
    )


def _word_around(chunk: bytes, found: re.Match[bytes]) -> bytes:
    """The word around the byte `found`: its letters and other 8-bit bytes."""
    start, end = found.start(), found.end()
    while start and re.match(rb"[A-Za-z\x80-\xff]", chunk[start - 1 : start]):
        start -= 1
    while end < len(chunk) and re.match(rb"[A-Za-z\x80-\xff]", chunk[end : end + 1]):
        end += 1
    return chunk[start:end]


def _misread(path: Path, word: bytes, codec: str) -> InvalidInput:
    as_1252 = word.decode("cp1252", errors="replace")
    return InvalidInput(
        f"{path}: read as Windows-1252 it gives {as_1252!r}, which is "
        f"{word.decode(codec)!r} in a file saved as {_SAVED_AS[codec]}: give --encoding "
        f"{codec} (or --encoding cp1252 if {as_1252!r} is right)"
    )
