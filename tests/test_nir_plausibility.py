"""A NIR whose key matches is still refused when one of its parts cannot exist, and the
message names that part; every form INSEE really gives out stays accepted."""

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session, select
from stdnum.fr import nir as stdnum_nir

from cpms_admin.errors import FieldError
from cpms_admin.members.nir import parse_nir
from cpms_admin.models import Member
from tests.factories import make_member
from tests.harness import Cli

TODAY = date(2026, 11, 23)  # the property tests' today: 2A/2B fit a birth year up to 26


def keyed(body: str) -> str:
    """The 13 characters and their key (2A/2B counted as 19/18, as INSEE does)."""
    return body + stdnum_nir.calc_check_digits(body)


# --- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "1850578006084",  # a man born May 1985 in the Yvelines
        "2850578006084",
        "3850578006084",  # foreigners being registered (older form)
        "4850578006084",
        "7850578006084",  # temporary numbers (NIA)
        "8850578006084",
        "1852078006084",  # birth month unknown: 20-42
        "1854278006084",
        "1855078006084",  # and 50-99
        "1859978006084",
        "1850101006084",  # department 01
        "1850595006084",  # department 95
        "1850596006084",  # 96: born abroad (old form)
        "1850599352084",  # 99: born abroad, country code 352
        "1850597101084",  # overseas: 3-digit department, 2-digit commune
        "1850597622084",
        "1850597701084",  # Saint-Barthélemy
        "1850598801084",
        "185052A006084",  # Corsica from 1976
        "205052B006084",  # 2005: 2B
        "1500520006084",  # 1950: 20
        "1100520006084",  # 1910 (or 2010): 20 fits the first reading
        "1000520006084",
    ],
)
def test_real_life_nirs_are_accepted(body: str) -> None:
    assert parse_nir(keyed(body)) == keyed(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("0850578006084", "the sex digit 0 is not 1, 2, 3, 4, 7 or 8"),
        ("5850578006084", "the sex digit 5 is not"),
        ("6850578006084", "the sex digit 6 is not"),
        ("9850578006084", "the sex digit 9 is not"),
        ("1850078006084", "the birth month 00 is not 01-12, nor 20-42 or 50-99"),
        ("1851378006084", "the birth month 13 is not"),
        ("1851978006084", "the birth month 19 is not"),
        ("1854378006084", "the birth month 43 is not"),
        ("1854978006084", "the birth month 49 is not"),
        ("1850500006084", "the department 00 does not exist"),
        ("1850597001084", "the department 970 does not exist"),
        ("1850597901084", "the department 979 does not exist"),
        ("1850598301084", "the department 983 does not exist"),
        ("1850598901084", "the department 989 does not exist"),
        ("1850520006084", "the department 20 (Corsica before 1976) does not fit a birth in 1985"),
        ("1760520006084", "the department 20 (Corsica before 1976) does not fit a birth in 1976"),
        ("150052A006084", "the department 2A (Corsica since 1976) does not fit a birth in 1950"),
        ("175052B006084", "the department 2B (Corsica since 1976) does not fit a birth in 1975"),
        ("1850575000084", "the commune 000 does not exist"),
        ("1850597100084", "the commune 00 does not exist"),
        ("1850599000084", "the country code 000 does not exist"),
        ("1850578006000", "the order number 000 does not exist"),
        ("0000000000000", "the sex digit 0 is not"),
    ],
)
def test_impossible_nirs_say_which_part_is_wrong(body: str, reason: str) -> None:
    nir = keyed(body)
    assert stdnum_nir.is_valid(nir)  # only the new checks can catch it
    with pytest.raises(FieldError) as caught:
        parse_nir(nir)
    assert str(caught.value).startswith(f"invalid NIR {nir!r}: {reason}")
    assert caught.value.field == "nir"
    assert caught.value.exit_code == 2


def test_the_message_quotes_the_nir_as_typed() -> None:
    with pytest.raises(FieldError, match=r"^invalid NIR '0 00 00 00 000 000 97': the sex digit"):
        parse_nir(" 0 00 00 00 000 000 97 ")


def test_corsica_depends_on_which_centuries_are_past() -> None:
    """The NIR has no century: 2A with year 30 is 1930 today, and may be 2030 from 2030."""
    nir = keyed("130052A006084")
    with pytest.raises(FieldError, match="does not fit a birth in 1930"):
        parse_nir(nir, today=date(2029, 12, 31))
    assert parse_nir(nir, today=date(2030, 1, 1)) == nir


@pytest.mark.parametrize(
    ("nir", "born", "refusal"),
    [
        ("205012A004123", "1905-01-10", "the department 2A (Corsica since 1976) does not fit a "
         "birth in 1905 (20 before 1976)"),
        ("1050120004124", "2005-01-10", "the department 20 (Corsica before 1976) does not fit a "
         "birth in 2005 (2A or 2B since 1976)"),
        ("205012A004123", "2005-01-10", None),
        ("1050120004124", "1905-01-10", None),
    ],
)  # fmt: skip
def test_a_birth_date_gives_corsica_s_department_its_century(
    cli: Cli, session: Session, nir: str, born: str, refusal: str | None
) -> None:
    """Either reading of `05` fits 2A and 20 alone; the birth date keeps only one."""
    nir = keyed(nir)
    result = cli("member", "add", "--nir", nir, "--birth-date", born, "--last-name", "Casanova",
                 "--first-name", "Lisa", "--street", "1 cours Napoléon", "--postcode", "20000",
                 "--city", "Ajaccio")  # fmt: skip
    if refusal is None:
        assert result.exit_code == 0, result.output
    else:
        assert (result.exit_code, result.stderr) == (
            2,
            f"Error: birth date {born} does not fit the NIR: {refusal}\n",
        )
        assert session.exec(select(Member)).all() == []


# --- properties -----------------------------------------------------------------------------

SEXES = "123478"
MONTHS = [*range(1, 13), *range(20, 43), *range(50, 100)]
METROPOLE = [f"{n:02d}" for n in range(1, 97) if n != 20]  # with 96; Corsica apart
OVERSEAS = [str(n) for n in (*range(971, 979), *range(984, 989))]
CORSICA_SINCE_1976 = [*range(76, 100), *range(TODAY.year % 100 + 1)]
PARTS = ("sex", "year", "month", "department", "commune", "order")


@st.composite
def plausible_parts(draw: st.DrawFn) -> dict[str, str]:
    """The parts of a NIR that may exist: sex, year, month, department, commune, order."""
    kind = draw(st.sampled_from(["metropole", "corsica", "overseas", "abroad"]))
    year = draw(st.integers(0, 99))
    if kind == "metropole":
        department = draw(st.sampled_from(METROPOLE))
    elif kind == "corsica":
        department = draw(st.sampled_from(["20", "2A", "2B"]))
        choices = range(76) if department == "20" else CORSICA_SINCE_1976
        year = draw(st.sampled_from(choices))
    elif kind == "overseas":
        department = draw(st.sampled_from(OVERSEAS))
    else:
        department = "99"
    width = 5 - len(department)
    return {
        "sex": draw(st.sampled_from(SEXES)),
        "year": f"{year:02d}",
        "month": f"{draw(st.sampled_from(MONTHS)):02d}",
        "department": department,
        "commune": f"{draw(st.integers(1, 10**width - 1)):0{width}d}",
        "order": f"{draw(st.integers(1, 999)):03d}",
    }


def nir_of(parts: dict[str, str]) -> str:
    return keyed("".join(parts[name] for name in PARTS))


@st.composite
def one_part_wrong(draw: st.DrawFn) -> tuple[str, str]:
    """A NIR with a matching key and exactly one impossible part, and the words that must
    open the reason (`the sex digit`, `the department`...)."""
    parts = draw(plausible_parts())
    part = draw(st.sampled_from(["sex", "month", "department", "commune", "order"]))
    words = f"the {part}"
    if part == "sex":
        parts["sex"] = draw(st.sampled_from("0569"))
        words = "the sex digit"
    elif part == "month":
        parts["month"] = f"{draw(st.sampled_from([0, *range(13, 20), *range(43, 50)])):02d}"
        words = "the birth month"
    elif part == "department":
        year = int(parts["year"])
        wrong = ["00", *(str(n) for n in (970, 979, 980, 981, 982, 983, 989))]
        wrong += ["20"] if year >= 76 else []
        wrong += ["2A", "2B"] if year not in CORSICA_SINCE_1976 else []
        parts["department"] = draw(st.sampled_from(wrong))
        width = 5 - len(parts["department"])
        parts["commune"] = f"{draw(st.integers(1, 10**width - 1)):0{width}d}"
    elif part == "commune":
        parts["commune"] = "0" * (5 - len(parts["department"]))
        words = "the country code" if parts["department"] == "99" else "the commune"
    else:
        parts["order"] = "000"
        words = "the order number"
    return nir_of(parts), words


@settings(max_examples=200, deadline=None)
@given(plausible_parts())
def test_plausible_nirs_are_accepted(parts: dict[str, str]) -> None:
    nir = nir_of(parts)
    assert parse_nir(nir, today=TODAY) == nir


@settings(max_examples=200, deadline=None)
@given(one_part_wrong())
def test_one_impossible_part_is_refused_and_named(case: tuple[str, str]) -> None:
    nir, words = case
    assert stdnum_nir.is_valid(nir)
    with pytest.raises(FieldError) as caught:
        parse_nir(nir, today=TODAY)
    assert str(caught.value).startswith(f"invalid NIR {nir!r}: {words} ")


# --- members stored before the check ---------------------------------------------------------


def test_a_member_stored_with_an_impossible_nir_stays_reachable(cli: Cli, session: Session) -> None:
    """The check guards new members; looking one up only needs the key, so a member a
    migration stored before it (sex digit 0 here) can still be shown, unlocked, audited."""
    member = make_member(session)
    impossible = keyed("0" + member.nir[1:13])
    session.execute(text("UPDATE member SET nir = :new"), {"new": impossible})
    session.commit()
    refused = cli("member", "add", "--nir", impossible, "--last-name", "X", "--first-name", "Y",
                  "--street", "1 rue Sala", "--postcode", "69002", "--city", "Lyon")  # fmt: skip
    assert refused.exit_code == 2 and "the sex digit 0" in refused.stderr
    for command in (["member", "show"], ["account", "status"]):
        shown = cli("--json", *command, impossible)
        assert shown.exit_code == 0, shown.output
    unlocked = cli("account", "unlock", impossible, "--reason", "check")
    assert unlocked.exit_code == 0, unlocked.output
    assert json.loads(cli("--json", "audit", "list", "--nir", impossible).stdout)
