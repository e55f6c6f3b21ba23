"""Validation of member fields: NIR, e-mail, names, AFNOR address lines."""

from collections.abc import Iterable

import pytest

from cpms_admin.errors import FieldError
from cpms_admin.members.fields import validate_member_fields
from cpms_admin.members.nir import format_nir, mask_nir, parse_nir
from cpms_admin.members.postal import MAX_LINE
from tests.factories import make_nir, member_values


@pytest.mark.parametrize(
    "typed",
    ["185057800608491", "1 85 05 78 006 084 91", "1.85.05.78.006.084.91", "1-85-05-78-006-084-91"],
)
def test_nir_accepts_separators_and_stores_compact(typed: str) -> None:
    assert parse_nir(typed) == "185057800608491"


def test_nir_corsica_is_accepted_and_grouped() -> None:
    nir = make_nir(12, department="2A")
    assert parse_nir(nir.lower()) == nir
    assert format_nir(nir).split()[3] == "2A"
    # Typed with a Japanese or Chinese input method: fullwidth digits and letters alike.
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in nir.lower())
    assert parse_nir(fullwidth) == nir


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("185057800608492", "key does not match"),
        ("18505780060849", "15 characters"),
        ("18505780060849X", "15 digits"),
    ],
)
def test_invalid_nir_says_why(typed: str, reason: str) -> None:
    with pytest.raises(FieldError, match=reason) as caught:
        parse_nir(typed)
    assert caught.value.field == "nir"
    assert caught.value.exit_code == 2


def test_masked_nir_hides_the_middle() -> None:
    assert mask_nir("185057800608491") == "1 85 •• •• ••• ••• 91"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("M", "M"), ("m.", "M"), ("Mr.", "M"), ("Mme", "MME"), ("Mme.", "MME"), ("madame", "MME")],
)
def test_a_civility_is_read_with_or_without_its_dot(typed: str, stored: str) -> None:
    assert validate_member_fields(member_values(civility=typed)).civility == stored


def test_fields_are_normalised() -> None:
    fields = validate_member_fields(
        member_values(
            civility="madame",
            last_name="  de la  Fontaine ",
            email=" Jean.Dupont@EXAMPLE.fr ",
            city="Saint-Étienne",
            postcode="42000",
        )
    )
    assert fields.civility == "MME"
    assert fields.last_name == "de la Fontaine"
    assert fields.email == "Jean.Dupont@example.fr"
    assert fields.address.lines()[-1] == "42000 SAINT ETIENNE"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("last_name", "Martin\u202eLEFEVRE", "U+202E, RIGHT-TO-LEFT OVERRIDE"),
        ("first_name", "Z\u200bW", "U+200B, ZERO WIDTH SPACE"),
        ("street", "\ufeff12 rue de la Paix", "U+FEFF, ZERO WIDTH NO-BREAK SPACE"),
        ("city", "Saint\u00adÉtienne", "U+00AD, SOFT HYPHEN"),
    ],
)
def test_invisible_characters_are_refused_naming_them(field: str, value: str, named: str) -> None:
    """A right-to-left override prints "Martin\u202eLEFEVRE" as MARTINERVEFEL in the envelope's
    window; a zero-width space hides a name from every search."""
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(**{field: value}))
    assert caught.value.field == field
    assert str(caught.value).endswith(f"invisible characters are not allowed ({named})")


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("last_name", "Παπαδόπουλος", "'Π' (U+03A0, GREEK CAPITAL LETTER PI)"),
        ("first_name", "Анна", "'А' (U+0410, CYRILLIC CAPITAL LETTER A)"),
        ("city", "東京", "'東' (U+6771, CJK UNIFIED IDEOGRAPH-6771)"),
        ("street", "12 rue des Lilas 🌸", "'🌸' (U+1F338, CHERRY BLOSSOM)"),
    ],
)
def test_a_script_la_poste_cannot_sort_is_refused_naming_the_character(
    field: str, value: str, named: str
) -> None:
    """A Greek name went on the envelope in Greek, a Japanese one as empty boxes (the letters'
    fonts have no such glyphs), an emoji as itself: the agent is told what to write instead."""
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(**{field: value}))
    assert caught.value.field == field
    assert str(caught.value).endswith(
        f"only Latin letters can be printed for La Poste: {named} is not one; write it in "
        "Latin letters"
    )


@pytest.mark.parametrize(
    "name", ["Nguyễn", "Łódź-Dvořák", "Ørsted", "Œuvre", "Straße", "Ñúñez", "d’Aubigné"]
)
def test_every_latin_letter_is_a_name(name: str) -> None:
    assert validate_member_fields(member_values(last_name=name)).last_name == name


# Unicode 14's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): what a renderer
# shows as nothing at all, so a name holding one looks right and no search finds it.
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
]  # fmt: skip


def test_the_refused_characters_are_exactly_unicodes_controls_and_formats() -> None:
    """UNPRINTABLE is written out (a class built at import would cost every command's
    start-up): it must match this Python's Unicode, category Cc and Cf, no more, no less,
    and the one invisible mark among the accents (U+034F, COMBINING GRAPHEME JOINER)."""
    import sys
    import unicodedata

    from cpms_admin.audit import UNPRINTABLE

    wanted = "".join(
        chr(code)
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in ("Cc", "Cf") or code == 0x034F
    )
    assert "".join(UNPRINTABLE.findall("".join(map(chr, range(sys.maxunicode + 1))))) == wanted


def test_no_character_a_name_may_hold_is_invisible_or_unassigned() -> None:
    """`Le\u034fclerc` was taken, and no search found it: every character a name or an
    address line may hold is assigned and shows."""
    import sys
    import unicodedata

    ignorable = {code for first, last in DEFAULT_IGNORABLE for code in range(first, last + 1)}
    suspects = (
        code
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cn" or code in ignorable
    )
    assert let_through(suspects) == []


def let_through(codes: Iterable[int]) -> list[str]:
    """Those of the code points that a name or an address line may hold (`clean_line`)."""
    from cpms_admin.members.postal import clean_line

    taken = []
    for code in codes:
        try:
            clean_line(f"Le{chr(code)}clerc")
        except ValueError:
            continue
        taken.append(f"U+{code:04X}")
    return taken


@pytest.mark.parametrize(
    "email", ["jean@example.com\r\nBcc: x@evil.test", "jean@example.com\nX: y"]
)
def test_email_with_a_line_break_is_refused(email: str) -> None:
    with pytest.raises(FieldError, match="line break"):
        validate_member_fields(member_values(email=email))


@pytest.mark.parametrize(
    "email",
    [
        "jean", "jean@", "@example.com", "a b@example.com", "jean@example",
        # Mail servers refuse these: the code would never arrive.
        "jean..dupont@example.com", ".jean@example.com", "jean.@example.com",
        f"{'j' * 65}@example.com",
    ],
)  # fmt: skip
def test_malformed_email_is_refused(email: str) -> None:
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(email=email))
    assert caught.value.field == "email"


@pytest.mark.parametrize(
    "pasted",
    ["Jean Dupont <jean@example.com>", "<jean@example.com>", "jean@example.com,",
     "jean@example.com;", "mailto:jean@example.com"],
)  # fmt: skip
def test_an_address_pasted_with_its_name_is_refused_saying_what_to_give(pasted: str) -> None:
    """Copied from a mail client: refused (nothing is guessed into the member's record), the
    refusal naming the address to give."""
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(email=pasted))
    assert str(caught.value).endswith(": give the address alone, jean@example.com")


@pytest.mark.parametrize(
    "email", ["jean.dupont+mutuelle@example.com", "o'neil@example.ie", f"{'j' * 64}@example.com"]
)
def test_a_well_formed_email_is_kept(email: str) -> None:
    assert validate_member_fields(member_values(email=email)).email == email


def test_an_address_line_too_long_is_refused_not_cut() -> None:
    street = "12 chemin des Écoliers de la Grande Fontaine du Haut-Village"
    assert len(street) > MAX_LINE
    with pytest.raises(FieldError, match="does not fit") as caught:
        validate_member_fields(member_values(street=street))
    assert caught.value.field == "street"


def test_a_city_line_too_long_abroad_is_refused() -> None:
    city = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"
    with pytest.raises(FieldError, match="at most 38"):
        validate_member_fields(member_values(country="GB", postcode="LL61 5UJ", city=city))


@pytest.mark.parametrize("postcode", ["7500", "750001", "75OO2"])
def test_french_postcode_is_five_digits(postcode: str) -> None:
    with pytest.raises(FieldError, match="5 digits"):
        validate_member_fields(member_values(postcode=postcode))


def test_foreign_address_gets_a_country_line() -> None:
    fields = validate_member_fields(member_values(postcode="1000", city="Bruxelles", country="be"))
    assert fields.address.lines()[-2:] == ["1000 BRUXELLES", "BELGIQUE"]


def test_long_first_name_shrinks_to_initial_on_the_envelope() -> None:
    from cpms_admin.members.postal import recipient_line

    line = recipient_line("MME", "Marie-Chantal-Bénédicte", "de Montmorency-Laval")
    assert line == "Mme M.-C.-B. DE MONTMORENCY-LAVAL"  # a compound name's initials, French


def test_a_woman_s_name_too_long_is_never_quoted_as_monsieur() -> None:
    """The refusal quotes the shortest line tried: `M. DE ...` would read as "Monsieur"."""
    last = "de Montesquiou-Fezensac de La Rochefoucauld"
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(civility="MME", first_name="Marie", last_name=last))
    assert "'Mme DE MONTESQUIOU-FEZENSAC DE LA ROCHEFOUCAULD' is 47 characters" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"), [("last_name", ""), ("first_name", "   "), ("street", ""), ("city", "")]
)
def test_required_fields(field: str, value: str) -> None:
    with pytest.raises(FieldError, match="required") as caught:
        validate_member_fields(member_values(**{field: value}))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("field", "value", "stray"),
    [
        ("last_name", "Martin 06 12 34 56 78", "0"),
        ("last_name", "Martin2", "2"),
        ("first_name", "Claire (claire@exemple.fr)", "@"),
        ("last_name", "https://exemple.fr", ":"),
        ("last_name", "Dupont²", "²"),
    ],
)
def test_a_phone_number_an_e_mail_or_a_web_address_is_no_name(
    field: str, value: str, stray: str
) -> None:
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(**{field: value}))
    assert (caught.value.field, str(caught.value)) == (
        field,
        f"{field} {value!r} is not a name: no name holds {stray!r}",
    )


@pytest.mark.parametrize(
    "name",
    ["J.-P.", "O'Neil", "d’Ormesson", "Le Bris-Ménard", "Louis XIV", "Muthu a/l Ramasamy"],
)
def test_initials_apostrophes_hyphens_slashes_and_roman_numerals_are_names(name: str) -> None:
    assert validate_member_fields(member_values(first_name=name)).first_name == name


def test_control_characters_are_refused() -> None:
    with pytest.raises(FieldError, match="control"):
        validate_member_fields(member_values(last_name="Dupont\x00"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("last_name", '=HYPERLINK("http://x.example","Dupont")'),
        ("first_name", "+Jean"),
        ("street", " -1+2 rue X"),
        ("city", "@SUM(1)"),
        ("address_complement", "=cmd|' /C calc'!A0"),
    ],
)
def test_a_value_a_spreadsheet_would_run_is_refused(field: str, value: str) -> None:
    with pytest.raises(FieldError, match="spreadsheet") as caught:
        validate_member_fields(member_values(**{field: value}))
    assert caught.value.field == field


def test_birth_date_must_match_the_nir() -> None:
    nir = make_nir(5, year=85, month=5)
    assert validate_member_fields(member_values(nir=nir, birth_date="03/05/1985")).birth_date
    with pytest.raises(FieldError, match="does not match"):
        validate_member_fields(member_values(nir=nir, birth_date="1986-05-03"))
    # A workbook's date-and-time cell names its day, when it is one.
    with pytest.raises(FieldError, match=r"holds a time of day: .* give the day alone, 1985-05-03"):
        validate_member_fields(member_values(nir=nir, birth_date="1985-05-03T08:30:00"))
    with pytest.raises(FieldError, match="is not a date: write YYYY-MM-DD"):
        validate_member_fields(member_values(nir=nir, birth_date="1985-02-30T08:30:00"))


def test_a_birth_date_is_past_and_written_one_of_the_two_ways_the_refusal_names() -> None:
    """2065-03-12 fits a NIR of 65 as well as 1965-03-12: it was accepted. Week dates,
    `19650312` and Arabic-Indic digits were read too, while the refusal offers two forms."""
    future = make_nir(5, year=65, month=3)
    assert validate_member_fields(member_values(nir=future, birth_date="1965-03-12")).birth_date
    with pytest.raises(FieldError, match="birth date 2065-03-12 is in the future"):
        validate_member_fields(member_values(nir=future, birth_date="2065-03-12"))
    for odd in ("1965-W10-5", "19650312", "١٢/٠٣/١٩٦٥"):
        with pytest.raises(FieldError, match="write YYYY-MM-DD"):
            validate_member_fields(member_values(nir=future, birth_date=odd))


def test_a_name_too_long_says_the_limit() -> None:
    with pytest.raises(FieldError) as caught:
        validate_member_fields(member_values(last_name="A" * 101))
    assert str(caught.value).startswith("last_name is 101 characters long, at most 100: 'AAA")
    kept = member_values(last_name="A" * 100, envelope_name="Mme A. A")
    assert validate_member_fields(kept).last_name == "A" * 100


def test_damage_messages_describe_the_value_typed() -> None:
    with pytest.raises(FieldError) as rounded:
        validate_member_fields(member_values(nir="162037000000000"))
    assert "(shown as 1,62037E+14)" in str(rounded.value)
    with pytest.raises(FieldError) as bad_date:
        validate_member_fields(member_values(birth_date="31-13-1985"))
    assert str(bad_date.value).endswith("is not a date: write YYYY-MM-DD (or DD/MM/YYYY)")


@pytest.mark.parametrize(("written", "country"), [("L-1234", "LU"), ("CH-8000", "CH")])
def test_a_postcode_written_with_its_country_s_prefix_is_taken(written: str, country: str) -> None:
    """As Luxembourg's and Switzerland's are written on envelopes: the same as without."""
    bare = written.split("-")[1]
    with_prefix = validate_member_fields(
        member_values(postcode=written, city="Ville", country=country)
    )
    without = validate_member_fields(member_values(postcode=bare, city="Ville", country=country))
    assert with_prefix.address.lines() == without.address.lines()


def test_every_character_a_name_may_hold_is_drawn_by_the_letters_fonts() -> None:
    """`Ỿvain` was taken and printed as `□VAIN`: a character neither of the letters' fonts
    (Liberation Sans, then DejaVu Sans) draws is refused like another script."""
    import unicodedata

    from fontTools.ttLib import TTFont

    from cpms_admin.letters.pdf.zones import FONT_FOLDERS

    drawn: set[int] = set()
    for name in ("LiberationSans-Regular.ttf", "DejaVuSans.ttf"):
        (font,) = {path for folder in FONT_FOLDERS for path in folder.rglob(name)}
        with TTFont(font, lazy=True) as loaded:
            drawn |= set(loaded.getBestCmap())
    undrawn = (
        code
        for code in range(0x20, 0x10000)  # nothing past the BMP is let through
        # white space collapses to a plain space
        if not unicodedata.category(chr(code)).startswith("Z") and code not in drawn
    )
    assert let_through(undrawn) == []
