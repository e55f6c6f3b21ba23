"""Deterministic, realistic fake members for the demo (never real people)."""

import csv
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from cpms_admin.members.fields import COLUMNS

FIRST = [
    ("M", "Jean"),
    ("MME", "Hélène"),
    ("M", "François"),
    ("MME", "Chloé"),
    ("M", "Loïc"),
    ("MME", "Anaïs"),
    ("M", "Mathéo"),
    ("MME", "Zoé"),
    ("M", "Jérôme"),
    ("MME", "Maëlle"),
    ("M", "Noël"),
    ("MME", "Inès"),
    ("M", "Gaëtan"),
    ("MME", "Béatrice"),
    ("M", "Raphaël"),
]
LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "Da Silva",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupont",
    "Lambert",
    "Fontaine",
    "Rousseau",
    "Müller",
]
PLACES = [
    ("75011", "Paris", "75"),
    ("69003", "Lyon", "69"),
    ("13008", "Marseille", "13"),
    ("31000", "Toulouse", "31"),
    ("42000", "Saint-Étienne", "42"),
    ("59000", "Lille", "59"),
    ("20000", "Ajaccio", "2A"),
    ("33000", "Bordeaux", "33"),
    ("44000", "Nantes", "44"),
    ("97400", "Saint-Denis", "97"),
]
STREETS = [
    "rue de la République",
    "avenue Jean Jaurès",
    "boulevard Victor Hugo",
    "place de la Mairie",
    "chemin des Vignes",
    "rue du Général Leclerc",
    "allée des Tilleuls",
]


def nir_for(rng: random.Random, civility: str, year: int, month: int, dept: str) -> str:
    sex = "1" if civility == "M" else "2"
    dept = dept if dept != "97" else "974"
    if dept in ("2A", "2B") and year < 1976:
        dept = "20"  # Corsica was one department until 1976
    commune = f"{rng.randrange(1, 999):03d}" if len(dept) == 2 else f"{rng.randrange(1, 99):02d}"
    body = f"{sex}{year % 100:02d}{month:02d}{dept}{commune}{rng.randrange(1, 999):03d}"
    key = 97 - int(body.replace("2A", "19").replace("2B", "18")) % 97
    return f"{body}{key:02d}"


def ascii_only(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def demo_members(count: int, seed: int = 2026) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        civility, first = FIRST[i % len(FIRST)]
        last = LAST[(i * 7) % len(LAST)]
        postcode, city, dept = PLACES[i % len(PLACES)]
        year, month, day = rng.randrange(1945, 2004), rng.randrange(1, 13), rng.randrange(1, 29)
        with_email = i % 3 != 2  # a third of the members have no e-mail: codes go by post
        slug = f"{first}.{last}".lower().replace(" ", "")
        rows.append(
            {
                "nir": nir_for(rng, civility, year, month, dept),
                "civility": civility,
                "last_name": last,
                "first_name": first,
                "birth_date": f"{year}-{month:02d}-{day:02d}",
                "email": ascii_only(f"{slug}{i}@exemple.fr") if with_email else "",
                "street": f"{rng.randrange(1, 120)} {STREETS[i % len(STREETS)]}",
                "address_complement": "3e étage" if i % 5 == 0 else "",
                "address_building": "Bâtiment B" if i % 5 == 0 else "",
                "postcode": postcode,
                "city": city,
                "country": "FR",
            }
        )
    return rows


def write_csv(
    path: Path,
    rows: list[dict[str, str]],
    *,
    columns: Sequence[str] = COLUMNS,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> None:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
