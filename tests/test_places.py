"""The postcode base shipped in the package: postcodes as agents type them, communes as agents
spell them, and refusals that name what would have been right. Real data file, no mocks."""

import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cpms_admin.errors import FieldError
from cpms_admin.members import places
from cpms_admin.members.places import (
    CityNotAtPostcode,
    Place,
    UnknownPostcode,
    find_place,
    normalise_postcode,
    places_at,
)

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("75 002", "75002"),
        (" 75\u00a0002 ", "75002"),
        ("1000", "01000"),  # a spreadsheet dropped the zero; 01000 exists
        ("9999", "9999"),  # 09999 does not: left for validation to refuse
        ("7500A", "7500A"),
        ("750021", "750021"),
    ],
)
def test_normalise_postcode(typed: str, expected: str) -> None:
    assert normalise_postcode(typed) == expected


def test_a_postcode_missing_its_zero_finds_its_commune() -> None:
    assert find_place("1000", "Bourg-en-Bresse") == Place(
        "01000", "Bourg-en-Bresse", "01053", "BOURG-EN-BRESSE"
    )


def test_delivery_label_is_the_bases_not_the_name() -> None:
    place = find_place("51290", "SAINT-REMY-EN-BOUZEMONT-SAINT-GENEST-ET-ISSON")
    assert place.insee == "51513"
    assert place.delivery_label == "ST REMY BOUZEMONT"


@pytest.mark.parametrize(
    "typed",
    [
        "L'Haÿ-les-Roses",
        "L’HAY-LES-ROSES",  # a typographic apostrophe
        "l hay les roses",
        "LHAY LES ROSES",
        "  L'Hay   les Roses ",
        "L HAY LES ROSES",  # the delivery label itself
    ],
)
def test_city_typing_variants(typed: str) -> None:
    assert find_place("94240", typed) == Place(
        "94240", "L'Haÿ-les-Roses", "94038", "L HAY LES ROSES"
    )


@pytest.mark.parametrize(
    "typed",
    [
        "St Remy en Bouzemont St Genest et Isson",
        "saint-rémy-en-bouzemont-saint-genest-et-isson",
        "ST REMY BOUZEMONT",
        "Saint Remy Bouzemont",
    ],
)
def test_saint_and_st_are_the_same(typed: str) -> None:
    assert find_place("51290", typed).insee == "51513"


def test_sainte_and_ste_are_the_same() -> None:
    assert find_place("51290", "Ste-Marie-du-Lac-Nuisement").insee == "51277"
    assert find_place("51290", "sainte marie du lac nuisement").insee == "51277"


def test_a_labels_trailing_article_may_come_first_and_is_printed_first() -> None:
    for typed in ("Les Baux-de-Provence", "BAUX-DE-PROVENCE (LES)", "les baux de provence"):
        assert find_place("13520", typed).delivery_label == "LES BAUX-DE-PROVENCE"


def test_a_locality_is_accepted_and_kept_as_the_delivery_label() -> None:
    """The base has no "ligne 5"; its other labels (a district's own label) stand in."""
    assert find_place("13290", "Les Milles") == Place(
        "13290", "Aix-en-Provence", "13001", "LES MILLES"
    )
    assert find_place("13290", "Aix-en-Provence").delivery_label == "AIX EN PROVENCE"


@pytest.mark.parametrize("typed", ["Paris", "PARIS 2", "Paris 2e", "paris 02", "Paris 2eme"])
def test_arrondissements(typed: str) -> None:
    assert find_place("75002", typed) == Place("75002", "Paris 2e Arrondissement", "75102", "PARIS")


def test_a_commune_name_beats_another_communes_label() -> None:
    # Some Boulogne-Billancourt streets are routed as 75016 PARIS.
    assert find_place("75016", "Paris").insee == "75116"
    assert find_place("75016", "Boulogne-Billancourt").insee == "92012"


def test_wrong_pair_names_both_sides() -> None:
    with pytest.raises(CityNotAtPostcode) as caught:
        find_place("75002", "Lyon")
    assert str(caught.value) == "75002 is PARIS; Lyon is 69001–69009"
    assert isinstance(caught.value, FieldError)
    assert caught.value.field == "city"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("postcode", "city", "message"),
    [
        ("69001", "Paris", "69001 is LYON; Paris is 75001–75020, 75116"),
        ("75002", "Paris 3e", "75002 is PARIS; Paris 3e is 75003"),
        # a name found in many places: those in the postcode's department only
        ("93100", "Saint-Denis", "93100 is MONTREUIL; Saint-Denis is 93200, 93210"),
        ("75002", "Pariss", "75002 is PARIS, not Pariss"),
    ],
)
def test_refusal_messages(postcode: str, city: str, message: str) -> None:
    with pytest.raises(CityNotAtPostcode) as caught:
        find_place(postcode, city)
    assert str(caught.value) == message


def test_refusal_lists_a_few_communes_of_a_crowded_postcode() -> None:
    with pytest.raises(CityNotAtPostcode) as caught:
        find_place("51290", "Vitry-le-François")
    message = str(caught.value)
    assert message.startswith("51290 is AMBRIERES, ARRIGNY, ")
    assert re.search(r"and \d+ others; Vitry-le-François is 51300$", message), message
    assert "\n" not in message


def test_refusal_cuts_a_long_list_of_postcodes() -> None:
    with pytest.raises(CityNotAtPostcode) as caught:
        find_place("75002", "Saint-Denis")
    assert re.fullmatch(
        r"75002 is PARIS; Saint-Denis is ([\d–]+, ){6}… \(\d+ postcodes\)", str(caught.value)
    )


@pytest.mark.parametrize(
    ("postcode", "shown"), [("75999", "75999"), ("9999", "9999"), ("98000", "98000")]
)
def test_unknown_postcode(postcode: str, shown: str) -> None:
    with pytest.raises(UnknownPostcode) as caught:
        find_place(postcode, "Paris")
    assert str(caught.value) == f"postcode {shown} does not exist"
    assert caught.value.field == "postcode"


def test_empty_fields_are_required() -> None:
    with pytest.raises(FieldError, match="postcode is required"):
        find_place(" ", "Paris")
    with pytest.raises(FieldError, match="city is required") as caught:
        find_place("75002", " - ")
    assert caught.value.field == "city"


@pytest.mark.parametrize(
    ("postcode", "city", "insee"),
    [
        ("20000", "Ajaccio", "2A004"),
        ("20200", "Bastia", "2B033"),
        ("97400", "Saint-Denis", "97411"),
        ("97200", "Fort-de-France", "97209"),
        ("97300", "Cayenne", "97302"),
        ("97100", "Basse-Terre", "97105"),
        ("97600", "Mamoudzou", "97611"),
        ("97500", "Saint-Pierre", "97502"),
    ],
)
def test_corsica_and_overseas_are_covered(postcode: str, city: str, insee: str) -> None:
    assert find_place(postcode, city).insee == insee


def test_every_entry_reads_and_every_label_fits_an_envelope_line() -> None:
    every = [place for postcode in places.postcode_base() for place in places_at(postcode)]
    provenance = (places.BASE.parent / "postcodes.PROVENANCE").read_text()
    assert f"entries: {len(every)} " in provenance
    assert re.search(r"source: npm package codes-postaux \d+\.\d+\.\d+", provenance)
    assert re.search(r"sha256 [0-9a-f]{64}", provenance)
    assert all(re.fullmatch(r"\d{5}", p.postcode) for p in every)
    assert all(re.fullmatch(r"\d[\dAB]\d{3}", p.insee) for p in every)
    assert max(len(p.delivery_label) for p in every) <= 32


def test_start_up_does_not_load_the_base() -> None:
    probe = (
        "import sys; from cpms_admin.cli.app import app; "
        "from cpms_admin.members import places; "
        "print('gzip' in sys.modules, places.postcode_base.cache_info().currsize)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "False 0"


def fake_tarball(path: Path) -> Path:
    """A codes-postaux tarball of three entries, shaped like the real one."""
    entries = [
        ("75002", "75102", "Paris 2e Arrondissement", "PARIS"),
        ("94240", "94038", "L'Haÿ-les-Roses", "L HAY LES ROSES"),
        ("13290", "13001", "Aix-en-Provence", "LES MILLES"),
    ]
    compact = [
        {"codePostal": p, "codeCommune": i, "nomCommune": n, "libelleAcheminement": label}
        for p, i, n, label in entries
    ]
    full = [*compact, {**compact[2], "libelleAcheminement": "AIX EN PROVENCE"}]
    files = {
        "package.json": json.dumps({"name": "codes-postaux", "version": "9.9.9", "license": "MIT"}),
        "LICENSE": "The MIT License (MIT)\n\nCopyright (c) 2021 Someone\n",
        "codes-postaux.json": json.dumps(compact),
        "codes-postaux-full.json": json.dumps(full),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_refresh_script_converts_a_tarball(tmp_path: Path) -> None:
    tarball = fake_tarball(tmp_path / "codes-postaux-9.9.9.tgz")
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "scripts/refresh_postcodes.py", str(tarball), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    lines = gzip.decompress((out / "postcodes.tsv.gz").read_bytes()).decode().splitlines()
    assert lines == [
        "13290\t13001|Aix-en-Provence|LES MILLES|AIX EN PROVENCE",
        "75002\t75102|Paris 2e Arrondissement|PARIS",
        "94240\t94038|L'Haÿ-les-Roses|_",
    ]
    provenance = (out / "postcodes.PROVENANCE").read_text()
    assert "source: npm package codes-postaux 9.9.9" in provenance
    assert "entries: 3 " in provenance
    assert "package licence: MIT (Copyright (c) 2021 Someone)" in provenance
