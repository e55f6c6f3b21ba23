"""French postcodes, offline: which communes a postcode serves and the label mail is routed by.

    find_place("94240", "l'hay les roses").delivery_label   # 'L HAY LES ROSES'
    find_place("75002", "Lyon")   # CityNotAtPostcode: 75002 is PARIS; Lyon is 69001–69009

The base is `cpms_admin/data/postcodes.tsv.gz`, made by `scripts/refresh_postcodes.py` from
the npm package codes-postaux (source, version and licence in `postcodes.PROVENANCE`). It
covers metropolitan France with Corsica, the overseas departments (971 to 974, 976) and
Saint-Pierre-et-Miquelon (975); not Saint-Barthélemy, Saint-Martin, the Pacific territories,
Monaco (a foreign address here, country MC), nor CEDEX codes.

It is read on first use only (about 10 ms) and kept: importing this module costs nothing
(not even `gzip`).
One line per postcode, `POSTCODE<TAB>ENTRY<TAB>ENTRY...`, one entry per commune,
`INSEE|Name|LABEL[|OTHER LABEL...]`. To keep the file small, LABEL is empty when it is the
name in capitals without accents nor apostrophes, and `_` when it is that with spaces for
hyphens (see `expand_label`); other labels are further names mail reaches that commune by
at that postcode (`LES MILLES` in Aix-en-Provence, `MARSEILLE 2EME`).
"""

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from cpms_admin.errors import FieldError, NotReady
from cpms_admin.members.afnor import strip_accents

BASE = Path(__file__).parent.parent / "data" / "postcodes.tsv.gz"
SHOWN = 6  # names or postcodes an error message lists before it says how many more


@dataclass(frozen=True, slots=True)
class Place:
    postcode: str
    commune: str  # the official name: "L'Haÿ-les-Roses", "Paris 2e Arrondissement"
    insee: str  # the commune's INSEE code; for Paris, Lyon, Marseille the arrondissement's
    delivery_label: str  # libellé d'acheminement, at most 32 characters: "L HAY LES ROSES"


class UnknownPostcode(FieldError):
    """No commune has this postcode."""

    def __init__(self, postcode: str) -> None:
        super().__init__("postcode", f"postcode {postcode} does not exist")
        self.postcode = postcode


class CityNotAtPostcode(FieldError):
    """The postcode exists but does not serve this city; the message names what it serves,
    and the city's own postcodes when the city is known."""

    def __init__(self, message: str, *, postcode: str, city: str) -> None:
        super().__init__("city", message)
        self.postcode = postcode
        self.city = city


def normalise_postcode(raw: str) -> str:
    """`75 002` -> `75002`; `1000` -> `01000` only if 01000 exists (a spreadsheet ate the zero).
    Anything else comes back as typed, without spaces, for validation to refuse."""
    compact = "".join(raw.split())
    if len(compact) == 4 and compact.isdigit() and "0" + compact in postcode_base():
        return "0" + compact
    return compact


@lru_cache(maxsize=4096)  # an import repeats the same few thousand places; a refusal is not kept
def find_place(postcode: str, city: str) -> Place:
    """The commune `city` at `postcode`, however an agent typed it: case, accents, hyphens,
    spaces, apostrophes, ST/SAINT and STE/SAINTE; the official name (`Paris 2e` or `Paris`
    for an arrondissement) or one of its delivery labels there.

    The delivery label is the one typed when it is one of the commune's labels there (`LES
    MILLES` or `AIX EN PROVENCE` at 13290), else the commune's main label. A name beats a
    label: at 38790 `St-Georges-d'Espéranche` is that commune, not Diémoz whose streets
    some labels route by it."""
    postcode = normalise_postcode(postcode)
    if not postcode:
        raise FieldError("postcode", "postcode is required")
    key = _key(city)
    if not key:
        raise FieldError("city", "city is required")
    entries = _entries(postcode)
    if not entries:
        raise UnknownPostcode(postcode)
    best: tuple[int, Place] | None = None
    for place, labels in entries:
        keys = [_key(label) for label in labels]
        named = key in _name_keys(place.commune)
        if key not in keys and not named:
            continue
        at = keys.index(key) if key in keys else 0
        rank = 0 if named else 1 if at == 0 else 2
        if best is None or rank < best[0]:
            best = (rank, Place(place.postcode, place.commune, place.insee, labels[at]))
    if best is None:
        raise _not_here(postcode, " ".join(city.split()), key, entries)
    return best[1]


def places_at(postcode: str) -> tuple[Place, ...]:
    """Every commune `postcode` serves, with its main delivery label; () if none."""
    return tuple(place for place, _ in _entries(postcode))


def expand_label(name: str, code: str) -> str:
    """A delivery label as stored: empty for the name in capitals without accents nor
    apostrophes, `_` for that with spaces for hyphens, else the label itself, its article
    put back in front where the base has it last as an index does (`RUSSEY (LE)` is printed
    `LE RUSSEY`, `ETANG-LA-VILLE (L )` `L ETANG-LA-VILLE`)."""
    if code not in ("", "_"):
        return _ARTICLE_LAST.sub(r"\2 \1", code)
    label = _capitals(name).replace("'", " ")
    return label.replace("-", " ") if code == "_" else label


_SAINTS = {"ST": "SAINT", "STE": "SAINTE", "STS": "SAINTS", "STES": "SAINTES"}
_ARTICLE_LAST = re.compile(r"^(.*?)\s*\((L|LA|LE|LES)[\s']*\)$")
_WORD = re.compile(r"[A-Z0-9]+")
_ARRONDISSEMENT = re.compile(r"(.+) (\d+)(?:e|er) Arrondissement")


def _key(text: str) -> str:
    """What every spelling of a place shares: `St-Rémy l'Abbaye`, `SAINT REMY L ABBAYE` and
    `saint rémy labbaye` give `SAINTREMYLABBAYE`; a label's trailing article, `BAUX DE
    PROVENCE (LES)`, moves to the front."""
    capitals = _capitals(text).strip()
    if capitals.endswith(")"):
        capitals = _ARTICLE_LAST.sub(r"\2 \1", capitals)
    return "".join(_SAINTS.get(word, word) for word in _WORD.findall(capitals))


def _name_keys(name: str) -> set[str]:
    """`Paris 2e Arrondissement` is also `Paris`, `Paris 2`, `Paris 02`, `Paris 2e`,
    `Paris 2eme`."""
    key = _key(name)
    found = _ARRONDISSEMENT.fullmatch(name) if name.endswith("Arrondissement") else None
    if found is None:
        return {key}
    city, number = _key(found[1]), found[2]
    numbers = {number, number.zfill(2)}
    return {key, city, *(city + n + end for n in numbers for end in ("", "E", "ER", "EME"))}


def _capitals(text: str) -> str:
    """Capitals without accents; any other letter outside ASCII is dropped."""
    return strip_accents(text).upper().encode("ascii", "ignore").decode("ascii")


@cache
def postcode_base() -> dict[str, str]:
    """Postcode -> its line, unparsed: reading the whole base costs one decompression."""
    try:
        import gzip  # here, not at the top: a command that checks no address never pays for it

        text = gzip.decompress(BASE.read_bytes()).decode("utf-8")
    except FileNotFoundError:
        raise NotReady(f"postcode base missing ({BASE}): reinstall cpms-admin") from None
    return {line[:5]: line for line in text.splitlines()}


def _parse(postcode: str) -> tuple[tuple[Place, tuple[str, ...]], ...]:
    """The communes at `postcode`, each with all its labels there, the main one first."""
    line = postcode_base().get(postcode)
    if line is None:
        return ()
    entries = []
    for entry in line.split("\t")[1:]:
        insee, name, code, *others = entry.split("|")
        label = expand_label(name, code)
        entries.append((Place(postcode, name, insee, label), (label, *others)))
    return tuple(entries)


_entries = lru_cache(maxsize=2048)(_parse)


@cache
def _postcodes_by_key() -> dict[str, list[str]]:
    """City key -> the postcodes serving a commune of that name or label. Built on the first
    refused pair only (a few hundred ms): a valid address never needs it."""
    index: dict[str, set[str]] = {}
    for postcode, line in postcode_base().items():
        for entry in line.split("\t")[1:]:
            _, name, code, *others = entry.split("|")
            # a label made from the name has the name's key: skip it
            labels = others if code in ("", "_") else [code, *others]
            for key in _name_keys(name).union(map(_key, labels)):
                index.setdefault(key, set()).add(postcode)
    return {key: sorted(postcodes) for key, postcodes in index.items()}


def _not_here(
    postcode: str, city: str, key: str, entries: tuple[tuple[Place, tuple[str, ...]], ...]
) -> CityNotAtPostcode:
    here = _shortened(list(dict.fromkeys(place.delivery_label for place, _ in entries)))
    elsewhere = _postcodes_by_key().get(key)
    if not elsewhere:
        message = f"{postcode} is {here}, not {city}"
    else:
        area = postcode[:3] if postcode.startswith("97") else postcode[:2]
        near = [code for code in elsewhere if code.startswith(area)]
        message = f"{postcode} is {here}; {city} is {_postcode_ranges(near or elsewhere)}"
    return CityNotAtPostcode(message, postcode=postcode, city=city)


def _shortened(names: list[str]) -> str:
    if len(names) <= SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:SHOWN])} and {len(names) - SHOWN} others"


def _postcode_ranges(postcodes: list[str]) -> str:
    """`69001–69009`, `75001–75020, 75116`: runs of three or more consecutive codes as a range."""
    runs: list[list[str]] = []
    for code in postcodes:
        if runs and int(code) == int(runs[-1][-1]) + 1:
            runs[-1].append(code)
        else:
            runs.append([code])
    items: list[str] = []
    for run in runs:
        items += [f"{run[0]}–{run[-1]}"] if len(run) >= 3 else run
    if len(items) <= SHOWN:
        return ", ".join(items)
    return f"{', '.join(items[:SHOWN])}, … ({len(postcodes)} postcodes)"
