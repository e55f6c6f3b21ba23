"""The typography of NF Z10-011 (postal addresses), as plain text rules.

Lines 4 to 6 (street, locality, postcode and city) and the country line are printed in
capitals without accents or punctuation, which is what La Poste's sorting machines read best
(`3, allée de l'Hôpital` -> `3 ALLEE DE L HOPITAL`). Lines 2 and 3 (complement, building)
are printed in capitals too, but keep their accents and punctuation: nothing is read there
by machine, and `APPARTEMENT 3, 2E ÉTAGE` reads better to the postman with its comma.

A line longer than 38 characters is shortened with the norm's standard abbreviations, one
at a time in the order below (the long words first) until it fits.
"""

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

MAX_LINE = 38

# The standard abbreviations of the norm, in the order they are tried.
ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    ("APPARTEMENT", "APP"),
    ("RESIDENCE", "RES"),
    ("BATIMENT", "BAT"),
    ("IMMEUBLE", "IMM"),
    ("ESCALIER", "ESC"),
    ("BOULEVARD", "BD"),
    ("AVENUE", "AV"),
    ("LOTISSEMENT", "LOT"),
    ("ZONE INDUSTRIELLE", "ZI"),
    ("ZONE ARTISANALE", "ZA"),
    ("BOITE POSTALE", "BP"),
    ("PROMENADE", "PROM"),
    ("CARREFOUR", "CAR"),
    ("FAUBOURG", "FG"),
    ("IMPASSE", "IMP"),
    ("QUARTIER", "QUA"),
    ("CHEMIN", "CHE"),
    ("HAMEAU", "HAM"),
    ("SQUARE", "SQ"),
    ("ROUTE", "RTE"),
    ("PLACE", "PL"),
    ("ALLEE", "ALL"),
    ("COURS", "CRS"),
    ("ETAGE", "ETG"),
    ("PRESIDENT", "PDT"),
    ("PROFESSEUR", "PR"),
    ("MARECHAL", "MAL"),
    ("GENERAL", "GAL"),
    ("DOCTEUR", "DR"),
    ("SAINTE", "STE"),
    ("SAINT", "ST"),
    ("GRANDE", "GDE"),
    ("GRAND", "GD"),
    ("PETITE", "PTE"),
    ("PETIT", "PT"),
)

# Letters that Unicode does not decompose into a base letter and an accent.
_LETTERS = {"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th"}
_LIGATURES = str.maketrans(
    {**_LETTERS, **{k.upper(): v.upper() for k, v in _LETTERS.items() if len(k.upper()) == 1}}
)


_ORDINALS = str.maketrans({"º": None, "ª": None})


def strip_accents(text: str) -> str:
    """`Œuvrard-Łukasiewicz` -> `Oeuvrard-Lukasiewicz`: the one way accents go, for the
    envelope's lines, the postcode base's names and member search."""
    if text.isascii():
        return text
    # Decomposed first: Ǽ and Ǿ are Æ and Ø with an accent. The ordinal indicators go
    # before: decomposed, Spanish and Portuguese `3º izq.` would read `3O IZQ`, thirty.
    decomposed = unicodedata.normalize("NFKD", text.translate(_ORDINALS)).translate(_LIGATURES)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


_NOT_MACHINE = re.compile(r"[^A-Z0-9]+")


def machine_line(text: str) -> str:
    """Lines 4 to 6: capitals, no accents, no punctuation, single spaces."""
    return " ".join(_NOT_MACHINE.sub(" ", strip_accents(text).upper()).split())


def upper_line(text: str) -> str:
    """Lines 2 and 3: capitals, accents and punctuation kept."""
    return " ".join(text.upper().split())


@dataclass(frozen=True)
class Shortened:
    """A line as printed, and the abbreviations it took to fit (`("BOULEVARD", "BD")`)."""

    line: str
    abbreviations: tuple[tuple[str, str], ...] = ()

    @property
    def fits(self) -> bool:
        return len(self.line) <= MAX_LINE

    def describe(self) -> str:
        return ", ".join(f"{long} -> {short}" for long, short in self.abbreviations)


@lru_cache(maxsize=1 << 14)  # building lines repeat through an import file; a Shortened is frozen
def shorten(text: str, typography: Callable[[str], str]) -> Shortened:
    """The line as printed: `typography` applied, then abbreviations while it is too long.

    Words are compared without accents or punctuation, so `Résidence,` abbreviates too; the
    abbreviation replaces the word and whatever punctuation followed it is kept."""
    line = typography(text)
    used: list[tuple[str, str]] = []
    for long, short in ABBREVIATIONS:
        if len(line) <= MAX_LINE:
            break
        shorter = _replace_words(line, long.split(), short)
        if shorter != line:
            line = shorter
            used.append((long, short))
    return Shortened(line, tuple(used))


_SHORT = dict(ABBREVIATIONS)
# Every long form as whole words of a machine line (capitals, digits, single spaces).
_LONG_WORDS = re.compile(
    r"(?<![A-Z0-9])(?:" + "|".join(long for long, _ in ABBREVIATIONS) + r")(?![A-Z0-9])"
)


def sorting_form(text: str) -> str:
    """The line as La Poste's machines read it, with every abbreviation of the norm taken:
    `12, boulevard du Général Leclerc` and `12 BD DU GAL LECLERC` are one place. Two lines
    with the same sorting form send a letter to the same door."""
    return _LONG_WORDS.sub(lambda word: _SHORT[word.group()], machine_line(text))


def _replace_words(line: str, words: list[str], short: str) -> str:
    tokens = line.split(" ")
    keys = [machine_line(token) for token in tokens]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if keys[i : i + len(words)] == words:  # the punctuation around the words stays
            head = re.findall(r"^\W*", tokens[i])[0]
            tail = re.sub(r"^\W*[\w'’-]*", "", tokens[i + len(words) - 1])
            out.append(head + short + tail)
            i += len(words)
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)
