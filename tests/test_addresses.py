"""Addresses and names as La Poste delivers them: the six AFNOR lines as fields, legal names
kept whole, French places checked against La Poste's base, addresses abroad in their
country's order, and NF Z10-011 typography. Examples are the issue's regression cases."""

import csv
import json
from pathlib import Path
from typing import Any

import pypdf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from cpms_admin.errors import FieldError
from cpms_admin.members.afnor import ABBREVIATIONS, machine_line, shorten, sorting_form
from cpms_admin.members.fields import validate_member_fields
from cpms_admin.members.postal import recipient_line, same_destination
from cpms_admin.models import Member
from tests.factories import make_nir, member_values
from tests.harness import Cli
from tests.import_helpers import person, write_csv
from tests.letters_helpers import batch, manifests

MM_PER_PT = 25.4 / 72


def lines_of(**overrides: Any) -> list[str]:
    """The printed address lines below the recipient, for valid fields."""
    return validate_member_fields(member_values(**overrides)).address.lines()


def refusal(**overrides: Any) -> FieldError:
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(**overrides))
    return caught.value


def add(cli: Cli, *options: str) -> Any:
    return cli(
        "--json", "member", "add", "--nir", make_nir(), "--last-name", "Martin",
        "--first-name", "Hélène", "--street", "12 rue de la République", "--postcode", "69002",
        "--city", "Lyon", *options,
    )  # fmt: skip


# 1. The six AFNOR lines as fields


def test_complement_and_building_are_two_lines_each_in_its_place(cli: Cli) -> None:
    result = add(
        cli,
        "--address-complement", "Appartement 23",
        "--address-building", "Résidence Le Clos Saint-Martin",
        "--locality", "Lieu-dit Les Granges",
        "--civility", "MME",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    address = json.loads(result.stdout)["address"]
    assert address["lines"] == [
        "Mme Hélène MARTIN",
        "APPARTEMENT 23",
        "RÉSIDENCE LE CLOS SAINT-MARTIN",
        "12 RUE DE LA REPUBLIQUE",
        "LIEU DIT LES GRANGES",
        "69002 LYON",
    ]
    assert (address["address_building"], address["locality"]) == (
        "Résidence Le Clos Saint-Martin",
        "Lieu-dit Les Granges",
    )


def test_fields_can_be_cleared_and_changed_by_update(cli: Cli) -> None:
    added = add(cli, "--address-building", "Bâtiment C", "--locality", "BP 12")
    nir = json.loads(added.stdout)["nir"]
    result = cli("--json", "member", "update", nir, "--locality", "", "--address-building", "Bât D")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"]["lines"][1:] == [
        "BÂT D",
        "12 RUE DE LA REPUBLIQUE",
        "69002 LYON",
    ]


# 2. Legal names stored whole, the envelope line derived


@pytest.mark.parametrize(
    ("civility", "first", "last", "line"),
    [
        ("MME", "Jeanne", "de La Tour d'Auvergne-Lauraguais",
         "J. DE LA TOUR D'AUVERGNE-LAURAGUAIS"),
        ("MME", "Anne", "de La Rochefoucauld-Doudeauville", "A. DE LA ROCHEFOUCAULD-DOUDEAUVILLE"),
        ("MME", "Anne", "de La Rochefoucauld", "Mme Anne DE LA ROCHEFOUCAULD"),
        ("M", "Jean", "Dupont", "M Jean DUPONT"),
        # Initials as French writes them; a woman's "M." alone would read as Monsieur.
        ("M", "Jean-Pierre", "de La Rochefoucauld-Doudeauv",
         "M J.-P. DE LA ROCHEFOUCAULD-DOUDEAUV"),
        ("MME", "Marie", "de La Tour d'Auvergne-Lauraguais",
         "Mme DE LA TOUR D'AUVERGNE-LAURAGUAIS"),
        ("MME", "Marie", "X" * 35, "M. " + "X" * 35),  # nothing else fits: still printable
    ],
)  # fmt: skip
def test_a_legal_name_is_kept_whole_and_shortened_on_the_envelope(
    cli: Cli, civility: str, first: str, last: str, line: str
) -> None:
    result = cli(
        "--json", "member", "add", "--nir", make_nir(), "--civility", civility,
        "--last-name", last, "--first-name", first, "--street", "3 rue Sala",
        "--postcode", "69002", "--city", "Lyon",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["last_name"], shown["civility"]) == (last, civility)
    assert shown["address"]["lines"][0] == line


@pytest.mark.parametrize("first", ["Mathilde", "Marie Claire"])
def test_without_a_civility_a_woman_s_initial_never_reads_as_monsieur(first: str) -> None:
    last = "de Saint-Exupéry-Montmorency-Laval"
    fields = validate_member_fields(member_values(civility="", first_name=first, last_name=last))
    assert recipient_line(None, first, last) == "DE SAINT-EXUPÉRY-MONTMORENCY-LAVAL"
    assert fields.civility is None


def test_a_new_name_drops_the_envelope_name_chosen_for_the_old_one(cli: Cli) -> None:
    nir, long = make_nir(), "Rakotondrabe-Andrianampoinimerina-Be"
    envelope = "Mme RAKOTONDRABE-ANDRIANAMPOINIMERINA"
    added = add(cli, "--civility", "MME", "--first-name", "Claire", "--last-name", long,
                "--envelope-name", envelope, "--nir", nir)  # fmt: skip
    assert added.exit_code == 0, added.output
    renamed = cli("--json", "member", "update", nir, "--last-name", "Martin", "--reason", "usage")
    assert renamed.exit_code == 0, renamed.output
    assert json.loads(renamed.stdout)["address"]["lines"][0] == "Mme Claire MARTIN"
    assert "envelope name chosen for the former name was dropped" in renamed.stderr
    back = cli("member", "update", nir, "--last-name", long, "--reason", "divorce")
    assert back.exit_code == 2 and "--envelope-name" in back.stderr  # it does not fit again
    kept = cli("--json", "member", "update", nir, "--street", "3 rue Sala", "--reason", "moved")
    assert json.loads(kept.stdout)["address"]["lines"][0] == "Mme Claire MARTIN"


def test_an_import_renaming_a_member_drops_their_envelope_name_too(
    cli: Cli, tmp_path: Path
) -> None:
    nir = make_nir()
    added = add(cli, "--civility", "MME", "--first-name", "Claire", "--nir", nir,
                "--last-name", "Rakotondrabe-Andrianampoinimerina-Be",
                "--envelope-name", "Mme RAKOTONDRABE-ANDRIANAMPOINIMERINA")  # fmt: skip

    def imported_as(last: str, first: str) -> str:
        """Line 1 once a file without an envelope_name column gave these names."""
        renamed = tmp_path / "renamed.csv"
        renamed.write_text(
            "nir,last_name,first_name,street,postcode,city\n"
            f"{nir},{last},{first},12 rue de la République,69002,Lyon\n",
            encoding="utf-8",
        )
        done = cli("members", "import", str(renamed), "--on-conflict", "update")
        assert done.exit_code == 0, done.output
        line: str = json.loads(cli("--json", "member", "show", nir).stdout)["address"]["lines"][0]
        return line

    assert added.exit_code == 0, added.output
    assert imported_as("Martin", "Claire") == "Mme Claire MARTIN"
    # The same name in capitals, from another system, is no new name: nothing dropped.
    envelope = "Mme C. MARTIN-RAKOTONDRABE"
    kept = cli("member", "update", nir, "--envelope-name", envelope, "--reason", "usage")
    assert kept.exit_code == 0, kept.output
    assert imported_as("MARTIN", "CLAIRE") == envelope


def test_a_name_that_never_fits_asks_for_an_envelope_name(cli: Cli) -> None:
    last = "de Montmorency-Laval-Beaufremont-Listenois"
    refused = add(cli, "--last-name", last)
    assert refused.exit_code == 2
    assert "--envelope-name" in refused.stderr and "at most 38" in refused.stderr
    accepted = add(cli, "--last-name", last, "--envelope-name", "H. DE MONTMORENCY-LAVAL")
    assert accepted.exit_code == 0, accepted.output
    shown = json.loads(accepted.stdout)
    assert shown["last_name"] == last
    assert shown["address"]["lines"][0] == "H. DE MONTMORENCY-LAVAL"


def test_an_envelope_name_longer_than_a_line_is_refused() -> None:
    error = refusal(envelope_name="X" * 39)
    assert error.field == "envelope_name" and "at most 38" in str(error)


# 3. French places, checked against La Poste's base


def test_a_postcode_of_another_city_is_refused_with_the_candidates() -> None:
    error = refusal(postcode="75002", city="Lyon")
    assert "75002 is PARIS" in str(error) and "69001" in str(error) and "69009" in str(error)


@pytest.mark.parametrize(
    ("field", "pasted", "kept"),
    [
        ("street", "12 rue de la Paix, 75002 Paris", "12 rue de la Paix"),
        ("street", "12 RUE DE LA PAIX 75002 PARIS", "12 RUE DE LA PAIX"),
        ("address_complement", "Bât. C, 69003 Lyon", "Bât. C"),
        ("address_complement", "75002 Paris", None),  # a second city line
        ("address_building", "Rés. du Parc 69003 Lyon", "Rés. du Parc"),
        ("locality", "75002 Paris", None),
        ("locality", "BP 12 - 75002 Paris", "BP 12"),
        ("street", "12 rue de la Paix 75002 PARIS CEDEX 02", "12 rue de la Paix"),
    ],
)
def test_an_address_pasted_on_one_line_is_refused_saying_how_to_split_it(
    field: str, pasted: str, kept: str | None
) -> None:
    """The envelope would bear two city lines, and the post sorts by the last: refused, not
    guessed apart, the refusal saying which part goes where."""
    error = refusal(**{field: pasted})
    assert error.field == field
    if kept is None:
        assert str(error).endswith("is a postcode and town: give 75002 and 'Paris' as the "
                                   "postcode and city")  # fmt: skip
    else:
        assert f"give {kept!r} as the {field}" in str(error)


@pytest.mark.parametrize(
    ("country", "field", "pasted", "postcode", "city"),
    [
        ("BE", "street", "Rue de la Loi 16, 1000 Bruxelles", "1000", "Bruxelles"),
        ("GB", "street", "10 Downing Street, London SW1A 2AA", "SW1A 2AA", "London"),
        ("DE", "locality", "10115 Berlin", "10115", "Berlin"),
    ],
)
def test_an_address_abroad_pasted_on_one_line_is_refused_too(
    country: str, field: str, pasted: str, postcode: str, city: str
) -> None:
    """`Rue de la Loi 16, 1000 Bruxelles / 1000 BRUXELLES / BELGIQUE` was accepted: two
    city lines on the envelope, as a French address pasted so would have had."""
    values = {"street": "Rue de la Loi 16", field: pasted}
    error = refusal(country=country, postcode=postcode, city=city, **values)
    assert error.field == field
    assert str(error).endswith("give them only as the postcode and city"), str(error)


@pytest.mark.parametrize(
    "street", ["3 rue du 8 Mai 1945", "12 avenue 75002", "Lotissement 12345 Les Pins"]
)
def test_a_number_in_a_street_is_no_city_line(street: str) -> None:
    """Only a postcode that La Poste pairs with the words after it is a city line."""
    assert validate_member_fields(member_values(street=street)).address.street == street


@pytest.mark.parametrize(
    ("postcode", "city", "stored", "line"),
    [
        ("75 002", "Paris", "75002", "75002 PARIS"),
        ("1000", "Bourg-en-Bresse", "01000", "01000 BOURG EN BRESSE"),
        ("94240", "L'Haÿ-les-Roses", "94240", "94240 L HAY LES ROSES"),
        ("42000", "Saint-Étienne", "42000", "42000 SAINT ETIENNE"),
        # The base lists some labels as an index does, article last: printed in its place.
        ("25210", "Le Russey", "25210", "25210 LE RUSSEY"),
        ("78620", "L'Étang-la-Ville", "78620", "78620 L ETANG LA VILLE"),
        ("13520", "Les Baux-de-Provence", "13520", "13520 LES BAUX DE PROVENCE"),
    ],
)
def test_postcodes_are_normalised_and_the_line_is_la_postes_label(
    postcode: str, city: str, stored: str, line: str
) -> None:
    fields = validate_member_fields(member_values(postcode=postcode, city=city))
    assert fields.address.postcode == stored
    assert fields.address.lines()[-1] == line


def test_a_long_official_name_prints_as_its_delivery_label() -> None:
    city = "Saint-Remy-en-Bouzemont-Saint-Genest-et-Isson"
    fields = validate_member_fields(member_values(postcode="51290", city=city))
    assert fields.address.city == city
    line = fields.address.lines()[-1]
    assert line.startswith("51290 ST REMY") and len(line) <= 38


def test_a_four_digit_postcode_that_matches_nothing_says_five_digits() -> None:
    error = refusal(postcode="7500", city="Paris")
    assert error.field == "postcode" and "must be 5 digits" in str(error)


@pytest.mark.parametrize(("postcode", "country"), [("97133", "BL"), ("98714", "PF")])
def test_a_territory_with_a_country_code_of_its_own_says_which(postcode: str, country: str) -> None:
    error = refusal(postcode=postcode, city="Gustavia")
    assert str(error).endswith(f"give the country {country}")


def test_an_unknown_postcode_is_refused() -> None:
    assert "does not exist" in str(refusal(postcode="75999", city="Paris"))


# 4. Addresses abroad, in their country's format


@pytest.mark.parametrize(
    ("country", "postcode", "city", "street", "last_lines"),
    [
        ("GB", "SW1A 2AA", "London", "10 Downing Street",
         ["10 DOWNING STREET", "LONDON", "SW1A 2AA", "ROYAUME UNI"]),
        ("US", "10001", "New York NY", "350 Fifth Avenue",
         ["350 FIFTH AVENUE", "NEW YORK NY 10001", "ETATS UNIS"]),
        ("CA", "K1A 0B1", "Ottawa ON", "24 Sussex Drive",
         ["24 SUSSEX DRIVE", "OTTAWA ON K1A 0B1", "CANADA"]),
        ("BE", "1000", "Bruxelles", "Rue de la Loi 16",
         ["RUE DE LA LOI 16", "1000 BRUXELLES", "BELGIQUE"]),
        ("CH", "1211", "Genève", "Rue du Rhône 1", ["RUE DU RHONE 1", "1211 GENEVE", "SUISSE"]),
        ("MA", "20000", "Casablanca", "12 boulevard Zerktouni",
         ["12 BOULEVARD ZERKTOUNI", "20000 CASABLANCA", "MAROC"]),
        ("PF", "98714", "Papeete", "Rue du Général de Gaulle",
         ["RUE DU GENERAL DE GAULLE", "98714 PAPEETE", "POLYNESIE FRANCAISE"]),
        ("BL", "97133", "Saint-Barthélemy", "Rue de la République",
         ["RUE DE LA REPUBLIQUE", "97133 SAINT BARTHELEMY"]),
        ("MF", "97150", "Saint-Martin", "Rue de la République",
         ["RUE DE LA REPUBLIQUE", "97150 SAINT MARTIN"]),
        ("NC", "98800", "Nouméa", "Rue de Sébastopol",
         ["RUE DE SEBASTOPOL", "98800 NOUMEA", "NOUVELLE CALEDONIE"]),
        # Formats that name the area, not the city: the city takes its place.
        ("JP", "131-0045", "Tokyo", "1-1-2 Oshiage",
         ["131-0045", "TOKYO", "1 1 2 OSHIAGE", "JAPON"]),
        ("AE", "", "Dubai", "Sheikh Zayed Road 1",
         ["SHEIKH ZAYED ROAD 1", "DUBAI", "EMIRATS ARABES UNIS"]),
        # A postcode as its country writes it.
        ("BR", "01310-100", "São Paulo SP", "Avenida Paulista 1000",
         ["AVENIDA PAULISTA 1000", "SAO PAULO SP", "01310-100", "BRESIL"]),
        ("PL", "00-950", "Warszawa", "ul. Marszałkowska 1",
         ["UL MARSZALKOWSKA 1", "00-950 WARSZAWA", "POLOGNE"]),
        # Typed without the space the post reads the last part after.
        ("GB", "sw1a2aa", "London", "10 Downing Street",
         ["10 DOWNING STREET", "LONDON", "SW1A 2AA", "ROYAUME UNI"]),
        ("NL", "1012ab", "Amsterdam", "Damrak 1", ["DAMRAK 1", "1012 AB AMSTERDAM", "PAYS BAS"]),
        ("PK", "44000", "Islamabad", "House 1, Street 5",
         ["HOUSE 1 STREET 5", "ISLAMABAD 44000", "PAKISTAN"]),
    ],
)  # fmt: skip
def test_an_address_abroad_follows_its_country_and_ends_with_its_french_name(
    country: str, postcode: str, city: str, street: str, last_lines: list[str]
) -> None:
    lines = lines_of(country=country, postcode=postcode, city=city, street=street)
    assert lines == last_lines
    assert not any(line in {country, "GB", "US"} for line in lines)  # no ISO code on an envelope


@pytest.mark.parametrize(("typed", "meant"), [("UK", "GB"), ("EL", "GR")])
def test_a_country_code_people_use_that_iso_does_not_says_which_to_give(
    typed: str, meant: str
) -> None:
    error = refusal(country=typed, postcode="", city="London")
    assert error.field == "country" and str(error).endswith(f" is {meant}")


@pytest.mark.parametrize(
    ("typed", "hint"),
    [
        ("FRANCE", ": France is FR"),
        ("Allemagne", ": Allemagne is DE"),
        ("Royaume-Uni", ": Royaume-Uni is GB"),
        ("etats unis", ": États-Unis is US"),
        ("Germany", ": Allemagne is DE"),
        ("CHE", ": Suisse is CH"),
        ("Atlantide", ""),
        ("DOM", ""),  # not the Dominican Republic's DOM: an overseas department, FR or RE...
        ("Congo", ""),  # either Congo
        ("Corée", ""),  # either Korea
        ("Îles Vierges", ""),  # the British or the American ones
        ("Russie", ": Fédération de Russie is RU"),  # ISO's `Russie, Fédération de`
        ("Angleterre", ": Royaume-Uni is GB"),  # a name ISO gives no country
        ("Hollande", ": Pays-Bas is NL"),
        ("Deutschland", ": Allemagne is DE"),  # a file from a neighbour's system
        ("California", ": for California (États-Unis), give US and end the city with CA"),
        ("GEORGIA", ": Géorgie is GE; for Georgia (États-Unis), give US and end the city with GA"),
    ],
)
def test_a_country_typed_by_name_is_refused_with_its_code(
    cli: Cli, session: Session, typed: str, hint: str
) -> None:
    """As an agent types it (`--country FRANCE`): the code to give, when the name is one
    country's, in French or English, or its 3-letter code, and where a US state or a
    Canadian province goes; nothing is added."""
    result = add(cli, "--country", typed)
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: country must be a 2-letter ISO code, got {typed.upper()!r}{hint}\n",
    )
    assert session.exec(select(Member)).all() == []


def test_each_name_people_use_gives_its_own_country() -> None:
    """A name given to two countries would hint the first one found for both."""
    from cpms_admin.members.abroad import NAMES_PEOPLE_USE, code_of_named

    wrong = {
        name: code_of_named(name)
        for code, names in NAMES_PEOPLE_USE.items()
        for name in names
        if code_of_named(name) != code
    }
    assert wrong == {}


def test_every_country_s_name_fits_an_envelope_line_and_reads_in_order() -> None:
    """Saint Helena and South Georgia could not be added at all: their French names are
    longer than a line. Index forms turned round must still read (`Îles Malouines`)."""
    import pycountry

    from cpms_admin.members.abroad import country_name
    from cpms_admin.members.afnor import MAX_LINE, upper_line

    names = {c.alpha_2: country_name(c.alpha_2) for c in pycountry.countries}
    assert {code: n for code, n in names.items() if len(upper_line(n)) > MAX_LINE} == {}
    assert [names[c] for c in ("SH", "FK", "TW", "VI", "RE", "BO")] == [
        "Sainte-Hélène", "Îles Malouines", "Taïwan", "Îles Vierges des États-Unis",
        "Île de la Réunion", "État plurinational de Bolivie",
    ]  # fmt: skip
    assert [name for name in names.values() if not name[0].isupper()] == []  # in a message
    assert (
        lines_of(country="SH", postcode="STHL 1ZZ", city="Jamestown", street="Main Street")[-1]
        == "SAINTE HELENE"
    )


def test_an_overseas_department_is_domestic_mail() -> None:
    assert lines_of(country="FR", postcode="97400", city="Saint-Denis") == [
        "12 RUE DE LA REPUBLIQUE",
        "97400 SAINT DENIS",
    ]


@pytest.mark.parametrize(
    ("country", "postcode", "city", "field", "says"),
    [
        ("US", "10001", "New York", "city", "New York NY"),
        ("GB", "75002", "London", "postcode", "not a postcode of Royaume-Uni"),
        ("XX", "1000", "Nowhere", "country", "unknown country code"),
        ("RE", "75002", "Paris", "postcode", "not a postcode of Île de la Réunion"),
    ],
)
def test_an_address_abroad_that_its_post_would_not_deliver_is_refused(
    country: str, postcode: str, city: str, field: str, says: str
) -> None:
    error = refusal(country=country, postcode=postcode, city=city)
    assert error.field == field and says in str(error)


# 5. NF Z10-011 typography and abbreviations


def test_lines_4_to_6_are_capitals_without_accents_or_punctuation() -> None:
    lines = lines_of(
        street="3, allée de l'Hôpital", postcode="94240", city="L'Haÿ-les-Roses",
        address_complement="chez Mme Lœvenbruck",
    )  # fmt: skip
    assert lines == ["CHEZ MME LŒVENBRUCK", "3 ALLEE DE L HOPITAL", "94240 L HAY LES ROSES"]


def test_a_long_street_is_abbreviated_and_the_agent_told(cli: Cli) -> None:
    result = add(cli, "--street", "145 boulevard du Maréchal de Lattre de Tassigny")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["address"]["lines"][1] == "145 BD DU MAL DE LATTRE DE TASSIGNY"
    assert result.stderr == (
        "Note: street printed as '145 BD DU MAL DE LATTRE DE TASSIGNY' "
        "(BOULEVARD -> BD, MARECHAL -> MAL)\n"
    )


def test_an_abbreviation_keeps_the_brackets_around_its_word() -> None:
    lines = lines_of(address_building="Les Jardins de Montmartre (Bâtiment C2)")
    assert lines[0] == "LES JARDINS DE MONTMARTRE (BAT C2)"


@pytest.mark.parametrize(
    ("street", "line"),
    [
        ("Rua Augusta n.º 100, 2.º Esq.", "RUA AUGUSTA N 100 2 ESQ"),
        ("Calle Mayor 1, 3ª planta", "CALLE MAYOR 1 3 PLANTA"),
    ],
)
def test_an_ordinal_sign_is_no_letter_on_a_machine_line(street: str, line: str) -> None:
    """Decomposed, `3º` would read `3O`: thirty."""
    assert machine_line(street) == line


def test_luxembourg_s_postcode_loses_its_l_as_switzerland_s_its_ch() -> None:
    lines = lines_of(street="1 rue X", postcode="L-1234", city="Luxembourg", country="LU")
    assert lines[-2:] == ["1234 LUXEMBOURG", "LUXEMBOURG"]


def test_a_complement_and_building_in_one_field_is_abbreviated_to_fit() -> None:
    lines = lines_of(address_complement="Appartement 23, Résidence Le Clos Saint-Martin")
    assert lines[0] == "APP 23, RÉSIDENCE LE CLOS SAINT-MARTIN"  # one abbreviation was enough


@pytest.mark.parametrize(
    ("written", "respelt", "same"),
    [
        ("12 bd du Général Leclerc", "12, Boulevard du General LECLERC", True),
        ("Appartement 3, 2e étage", "APP 3 2E ETG", True),
        ("Résidence Saint-Jean", "RES ST JEAN", True),
        ("12 Grande Rue", "12 Gde Rue", True),
        ("12 rue Saint-Jean", "12 rue Sainte-Jeanne", False),
        ("12 bd Voltaire", "14 bd Voltaire", False),
        ("3 rue du Petit Pont", "3 rue du Pont", False),
    ],
)
def test_an_address_respelt_goes_to_the_same_door_and_a_new_one_does_not(
    written: str, respelt: str, same: bool
) -> None:
    """What decides that a member moved (a letter on its way voided, the flag lifted): the
    lines as the post sorts them, every abbreviation of the norm taken."""
    assert same_destination([written, "69002 LYON"], [respelt, "69002 LYON"]) is same


_WORDS = st.sampled_from(
    [long.title() for long, _ in ABBREVIATIONS] + [short for _, short in ABBREVIATIONS]
    + ["12", "de", "la", "République", "Hôpital", "Saintes", "l'Église,", "Lot", "Grand-Rue"]
)  # fmt: skip


@given(st.lists(_WORDS, min_size=1, max_size=12).map(" ".join))
def test_a_line_as_printed_goes_where_the_line_typed_goes(typed: str) -> None:
    """However many abbreviations the printed line took to fit, it is the same door."""
    printed = shorten(typed, machine_line).line
    assert sorting_form(printed) == sorting_form(typed)
    assert sorting_form(sorting_form(typed)) == sorting_form(typed)


def test_a_line_too_long_even_abbreviated_is_refused_with_the_limit() -> None:
    error = refusal(street="12 chemin des Écoliers de la Grande Fontaine du Haut-Village")
    assert error.field == "street"
    assert "even abbreviated" in str(error) and "at most 38" in str(error)


def test_an_address_of_more_than_seven_lines_is_refused() -> None:
    error = refusal(
        country="GB", postcode="SW1A 2AA", city="London", address_complement="Flat 2",
        address_building="Clarence House", locality="Westminster",
    )  # fmt: skip
    assert "at most 7" in str(error)


# The letter prints it all where the envelope's window shows it


def test_the_letter_prints_the_whole_block_inside_the_window(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    result = cli(
        "member", "add", "--nir", make_nir(), "--civility", "MME", "--first-name", "Jeanne",
        "--last-name", "de La Tour d'Auvergne-Lauraguais", "--street", "10 Downing Street",
        "--address-complement", "Flat 2", "--address-building", "Clarence House",
        "--postcode", "SW1A 2AA", "--city", "London",
        "--country", "GB",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    batch(cli, tmp_path / "out")
    [(directory, manifest)] = manifests(tmp_path / "out")
    reader = pypdf.PdfReader(directory / manifest["letters"][0]["file"])
    page = reader.pages[0]
    height = float(page.mediabox.height)
    wanted = [
        "J. DE LA TOUR D'AUVERGNE-LAURAGUAIS",
        "FLAT 2",
        "CLARENCE HOUSE",
        "10 DOWNING STREET",
        "LONDON",
        "SW1A 2AA",
        "ROYAUME UNI",
    ]
    found: dict[str, tuple[float, float]] = {}

    def visit(text: str, cm: list[float], tm: list[float], *_: object) -> None:
        x = (tm[4] * cm[0] + cm[4]) * MM_PER_PT
        baseline = (height - (tm[5] * cm[3] + cm[5])) * MM_PER_PT
        found.setdefault(text.strip(), (x, baseline))

    page.extract_text(visitor_text=visit)
    assert "Madame," in page.extract_text()  # the salutation keeps the civility
    printed = [line for line in wanted if line in found]
    assert printed == wanted
    for x, baseline in (found[line] for line in printed):
        assert x == pytest.approx(110, abs=0.5)
        assert 55 < baseline < 55 + 33


def test_the_new_fields_travel_through_import_and_export(cli: Cli, tmp_path: Path) -> None:
    row = person(
        71, address_complement="Appartement 4", address_building="Résidence Les Pins",
        locality="BP 12", last_name="de Montmorency-Laval-Beaufremont-Listenois",
        envelope_name="J. DE MONTMORENCY-LAVAL",
    )  # fmt: skip
    imported = cli("--json", "members", "import", str(write_csv(tmp_path / "in.csv", [row])))
    assert imported.exit_code == 0, imported.output
    shown = json.loads(cli("--json", "member", "show", row["nir"]).stdout)
    assert shown["address"]["lines"] == [
        "J. DE MONTMORENCY-LAVAL",
        "APPARTEMENT 4",
        "RÉSIDENCE LES PINS",
        "12 RUE DES LILAS",
        "BP 12",
        "75011 PARIS",
    ]
    out = tmp_path / "out.csv"
    assert cli("members", "export", "--out", str(out)).exit_code == 0
    [exported] = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {name: exported[name] for name in ("address_building", "locality", "envelope_name")} == {
        "address_building": "Résidence Les Pins",
        "locality": "BP 12",
        "envelope_name": "J. DE MONTMORENCY-LAVAL",
    }


def test_letters_unicode_does_not_decompose_are_spelt_out_not_dropped() -> None:
    """`Ł`, `Ø`, `Œ` become L, O, OE on lines 4 to 6, as in search and the postcode base."""
    lines = lines_of(street="3 rue Łukasiewicz-Øster", locality="Lieu-dit Œuvre")
    assert lines == ["3 RUE LUKASIEWICZ OSTER", "LIEU DIT OEUVRE", "69002 LYON"]
