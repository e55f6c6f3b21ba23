"""The envelope's windows: the recipient's address alone in La Poste's address zone and its
margin, the return address alone in the return window, checked on the printed text's
positions (poppler's `pdftotext -bbox`: each word's box, as a reader or a sorting machine
sees it)."""

import re
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from cpms_admin.errors import NotReady, Unprintable
from cpms_admin.letters.pdf.content import sample_content
from cpms_admin.letters.pdf.render import LetterRenderer
from cpms_admin.letters.pdf.zones import ADDRESS_CLEAR, ADDRESS_WINDOW, RETURN_WINDOW, Zone
from cpms_admin.members import postal
from cpms_admin.settings import load_settings
from cpms_admin.vocabulary import Wording

MM_PER_PT = 25.4 / 72
WORD = re.compile(
    r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>'
)
# Seven lines, as many as the norm allows (a member abroad with every field).
SEVEN = (
    "MME JEANNE-MARIE DUPONT-MOREAU",
    "APPARTEMENT 1204 ESCALIER B ETAGE 12",
    "RESIDENCE LES TILLEULS BATIMENT B",
    "128 BIS AVENUE DU GENERAL DE GAULLE",
    "LIEU-DIT LES GRANDS CHAMPS BP 1234",
    "1000 BRUXELLES",
    "BELGIQUE",
)
Word = tuple[str, float, float, float, float]


def words(pdf: Path, page: int) -> list[Word]:
    """Every word of a page with its box, in mm from the page's top left corner."""
    command = ["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(pdf), "-"]
    html = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [
        (text, *(float(v) * MM_PER_PT for v in box))
        for *box, text in WORD.findall(html.replace("&amp;", "&"))
    ]


def meeting(zone: Zone, found: list[Word]) -> list[Word]:
    return [word for word in found if zone.meets(*word[1:])]


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, ...]]]:
    """One letter of every wording, with a 7-line address and a 4-line return address."""
    base = sample_content("welcome", today=date(2026, 11, 23))
    letters = [
        replace(base, letter_id=n, kind=kind, wording=wording, specimen=False)
        for n, (kind, wording) in enumerate(
            [("welcome", "first_access"), ("security_code", "first_access")]
            + [("security_code", w) for w in ("requested_code", "migration")]
            + [("pin_reset", "pin_reset")]
        )
    ]
    assert {letter.wording for letter in letters} == set(Wording)
    letters[0] = replace(letters[0], recipient_lines=SEVEN)
    out = tmp_path_factory.mktemp("zones") / "zones.pdf"
    LetterRenderer().render(letters, out)
    return out, [letter.recipient_lines for letter in letters]


@pytest.mark.parametrize("page", [1, 2, 3, 4, 5])
def test_only_the_address_is_in_the_address_zone_and_it_fits_the_window(
    printed: tuple[Path, list[tuple[str, ...]]], page: int
) -> None:
    pdf, recipients = printed
    found = words(pdf, page)
    inside = meeting(ADDRESS_CLEAR, found)
    assert [w[0] for w in inside] == " ".join(recipients[page - 1]).split()
    for text, *box in inside:
        assert ADDRESS_WINDOW.holds(*box), (text, box)
    assert min(w[1] for w in inside) == pytest.approx(ADDRESS_WINDOW.left, abs=0.2)


@pytest.mark.parametrize("page", [1, 5])
def test_the_return_address_alone_shows_through_the_return_window(
    printed: tuple[Path, list[tuple[str, ...]]], page: int
) -> None:
    pdf, _ = printed
    inside = meeting(RETURN_WINDOW, words(pdf, page))
    expected = load_settings({}).letter_return_address.replace("|", " ").split()
    assert [w[0] for w in inside] == expected
    for text, *box in inside:
        assert RETURN_WINDOW.holds(*box), (text, box)


def test_the_return_address_is_a_setting(tmp_path: Path) -> None:
    settings = load_settings({"CPMS_LETTER_RETURN_ADDRESS": "CPMS|BP 42|69003 LYON"})
    from cpms_admin.letters.pdf.zones import return_address_lines

    lines = return_address_lines(settings.letter_return_address)
    letter = replace(sample_content("pin_reset"), return_address=lines)
    out = tmp_path / "lyon.pdf"
    LetterRenderer().render([letter], out)
    assert [w[0] for w in meeting(RETURN_WINDOW, words(out, 1))] == [
        "CPMS",
        "BP",
        "42",
        "69003",
        "LYON",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("CPMS", "2 to 4 lines"),
        ("A|B|C|D|E", "2 to 4 lines"),
        ("CPMS|" + "X" * 39, "at most 38"),
        ("CPMS|\x07BP 1", "control characters"),
    ],
)
def test_a_return_address_that_does_not_fit_the_window_is_refused(value: str, message: str) -> None:
    with pytest.raises(NotReady, match=f"CPMS_LETTER_RETURN_ADDRESS .*{message}") as caught:
        load_settings({"CPMS_LETTER_RETURN_ADDRESS": value})
    assert caught.value.exit_code == 5


def test_seven_lines_is_what_the_norm_allows() -> None:
    assert len(SEVEN) == postal.MAX_LINES


WIDE = (  # 38 characters each, whose capitals run past 85 mm in the letter's 10 pt
    "MME MARIE-MAUDE WOJCIECHOWSKA-DOMMANGE",
    "M MAXIMILIEN WOJCIECHOWSKI-MONTMORENCY",
    "MOULIN DU GRAND MOMMEGNIES MAUBEUGE WW",
)


def test_an_address_of_wide_capitals_is_set_smaller_to_fit_the_window(tmp_path: Path) -> None:
    base = sample_content("welcome", today=date(2026, 11, 23))
    letters = [
        replace(base, letter_id=n, recipient_lines=(line, "12 RUE DE LA PAIX", "75002 PARIS"))
        for n, line in enumerate(WIDE)
    ]
    letters.append(replace(base, letter_id=9))  # an ordinary address keeps the letter's size
    assert [letter.address_pt for letter in letters] == [9.0, 9.0, 9.0, 10.0]
    out = tmp_path / "wide.pdf"
    LetterRenderer().render(letters, out)
    for page, letter in enumerate(letters, start=1):
        inside = meeting(ADDRESS_CLEAR, words(out, page))
        assert [w[0] for w in inside] == " ".join(letter.recipient_lines).split()
        for text, *box in inside:
            assert ADDRESS_WINDOW.holds(*box), (page, text, box)


def test_an_address_line_too_wide_even_in_8_pt_is_unprintable() -> None:
    base = sample_content("welcome", today=date(2026, 11, 23))
    with pytest.raises(Unprintable, match="wider than the envelope's window even in 8 pt"):
        replace(base, recipient_lines=("W" * 38, "12 RUE DE LA PAIX", "75002 PARIS"))


def test_the_longest_city_the_date_line_takes_prints_on_one_line(tmp_path: Path) -> None:
    """CPMS_LETTER_CITY is measured against the date line with its longest date: what passes
    prints on one line on 1 and 30 September, one letter more is refused before any letter."""
    from cpms_admin.letters.pdf.zones import check_place

    name = "Saint-Rémy-de-Provence-et-Villiers-le-Bel"  # narrow letters: a fine boundary
    city = ""
    for length in range(len("Saint-Rémy"), len(name) + 1):  # the longest start it takes
        try:
            check_place(load_settings({"CPMS_LETTER_CITY": name[:length]}))
        except NotReady as refused:
            assert str(refused).endswith("more than its 85 mm: shorten it")
            break
        city = name[:length]
    assert "Saint-Rémy-de-Provence" in city and city != name
    for day in ("1er", "30"):  # `1er` is the wider
        letter = replace(
            sample_content("security_code"),
            place=city,
            letter_date=date(2026, 9, int(day.removesuffix("er"))),
            specimen=False,
        )
        out = tmp_path / "date.pdf"
        LetterRenderer().render([letter], out)
        found = words(out, 1)
        start = next(at for at, word in enumerate(found) if word[0].startswith("Saint-Rémy"))
        line = found[start : start + 5]
        assert [word[0] for word in line] == [f"{city},", "le", day, "septembre", "2026"]
        assert len({round(word[2]) for word in line}) == 1  # one line: the same top
