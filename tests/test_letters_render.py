"""Letters as the print house and the member see them: pages, text, address block, escaping."""

import itertools
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pypdf
import pytest

from cpms_admin.errors import NotReady
from cpms_admin.french import french_date
from cpms_admin.letters.pdf.content import LetterContent, sample_content
from cpms_admin.letters.pdf.render import STYLESHEET, LetterRenderer, PageSpan, check_templates
from cpms_admin.letters.pool import render_chunks
from tests.letters_helpers import THREE, make_letter

MM_PER_PT = 25.4 / 72


# A campaign's letters: security codes no one asked for, in each campaign wording.
CAMPAIGNS = tuple(
    replace(THREE[1], letter_id=20 + n, wording=wording)
    for n, wording in enumerate(["first_access", "migration"])
)


@pytest.fixture(scope="module")
def renderer() -> LetterRenderer:
    return LetterRenderer()


@pytest.fixture(scope="module")
def three(renderer: LetterRenderer, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("letters") / "batch.pdf"
    spans = renderer.render(THREE, out)
    return spans, pypdf.PdfReader(out)


def pages_text(reader: pypdf.PdfReader, span: PageSpan) -> str:
    pages = reader.pages[span.first_page - 1 : span.first_page - 1 + span.page_count]
    return "\n".join(page.extract_text() for page in pages)


def squeeze(text: str) -> str:
    """The code is printed letter-spaced; text extraction turns the spacing into blanks."""
    return re.sub(r"\s", "", text)


def test_letters_share_one_file_each_on_its_own_pages(three) -> None:
    spans, reader = three
    assert [s.letter_id for s in spans] == [11, 12, 13]
    assert spans[0].first_page == 1
    for before, after in itertools.pairwise(spans):
        assert after.first_page == before.first_page + before.page_count
    assert len(reader.pages) == spans[-1].first_page + spans[-1].page_count - 1
    for letter, span in zip(THREE, spans, strict=True):
        text = pages_text(reader, span)
        assert letter.code in squeeze(text)
        assert letter.nir_masked in text
        assert "Paris, le 23 novembre 2026" in text
        assert "1er décembre 2026" in text  # the code's expiry
        for line in letter.recipient_lines:
            assert line in text
        others = [other.code for other in THREE if other is not letter]
        assert not any(code in squeeze(text) for code in others)


def test_last_address_line_is_postcode_and_city_in_capitals_without_accents(three) -> None:
    spans, reader = three
    text = pages_text(reader, spans[0])
    lines = text.splitlines()
    assert "42000 SAINT ETIENNE" in lines
    assert "Étienne" not in text and "ÉTIENNE" not in text


def test_member_data_prints_exactly_as_typed(three, renderer: LetterRenderer) -> None:
    spans, reader = three
    text = pages_text(reader, spans[1])
    assert "M <b>x</b> {{ 7*7 }}" in text
    assert "49" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in renderer.document_html([THREE[1]])


def test_salutation_and_closing_follow_the_civility(three) -> None:
    spans, reader = three
    assert "d’agréer, Madame, l’expression" in pages_text(reader, spans[0])
    assert "d’agréer, Monsieur, l’expression" in pages_text(reader, spans[1])
    assert "d’agréer, Madame, Monsieur, l’expression" in pages_text(reader, spans[2])


def test_address_block_fits_the_envelope_window(three) -> None:
    """Window: 110 mm from the left edge, 55 mm from the top, 85 x 33 mm."""
    _, reader = three
    page = reader.pages[0]
    height = float(page.mediabox.height)
    wanted = set(THREE[0].recipient_lines)
    found: dict[str, tuple[float, float]] = {}

    def visit(text: str, cm: list[float], tm: list[float], *_: object) -> None:
        if text.strip() in wanted:
            x = (tm[4] * cm[0] + cm[4]) * MM_PER_PT
            baseline = (height - (tm[5] * cm[3] + cm[5])) * MM_PER_PT
            found[text.strip()] = (x, baseline)

    page.extract_text(visitor_text=visit)
    assert set(found) == wanted
    for x, baseline in found.values():
        assert x == pytest.approx(110, abs=0.5)
        assert 55 < baseline < 55 + 33


def page_pixels(pdf: Path, page: int) -> bytes:
    """One page as a greyscale bitmap (poppler's pdftoppm): what a printer would put on paper."""
    command = ["pdftoppm", "-r", "100", "-gray", "-f", str(page), "-l", str(page), str(pdf)]
    return subprocess.run(command, check=True, capture_output=True).stdout


# Letters of one group (same kind, wording and civility) whose own data differ in every way
# the slots can: 3 to 7 address lines, long and short lines, another code and reference.
SAME_GROUP = (
    make_letter(31, "welcome", code="111111", last_name="Li", street="1 rue A"),
    replace(
        make_letter(32, "welcome", code="987650", last_name="Dupont-Moreau-Lefebvre"),
        recipient_lines=(
            "MME JEANNE-MARIE DUPONT-MOREAU",
            "APPARTEMENT 1204 ESCALIER B ETAGE 12",
            "RESIDENCE LES TILLEULS BATIMENT B",
            "128 BIS AVENUE DU GENERAL DE GAULLE",
            "LIEU-DIT LES GRANDS CHAMPS BP 1234",
            "1000 BRUXELLES",
            "BELGIQUE",
        ),
        reference="L12345678",
    ),
    # Wide capitals: its address block is set in 9 pt, stamped from a prototype in 9 pt.
    replace(
        make_letter(33, "welcome", code="246801"),
        recipient_lines=("MME MARIE-MAUDE WOJCIECHOWSKA-DOMMANGE", "3 RUE DU MOULIN", "69003 LYON"),
    ),
)
assert SAME_GROUP[-1].address_pt == 9.0
# White space a layout would collapse: this letter's slots are laid out in full.
LAID_OUT = replace(THREE[0], letter_id=40, nir_masked="2 85  •• •• ••• ••• 42")


@pytest.mark.slow  # two layouts, and poppler for every page
def test_printed_letters_look_exactly_like_letters_laid_out_whole(tmp_path: Path) -> None:
    """The renderer prints each letter's slots over its kind's page laid out once, the slots
    restamped from their group's prototype (or laid out in full where that cannot be exact):
    the result must be the very letter WeasyPrint lays out from the whole HTML, to the pixel
    (a preview's SPÉCIMEN mark included)."""
    from weasyprint import HTML

    renderer = LetterRenderer()
    specimen = sample_content("welcome", letter_id=99, today=date(2026, 11, 23))
    letters = (*THREE, *CAMPAIGNS, *SAME_GROUP, LAID_OUT, specimen)
    whole = tmp_path / "whole.pdf"
    html = renderer.document_html(letters, stylesheet=STYLESHEET)
    HTML(string=html, base_url=str(renderer.letters_dir)).write_pdf(whole)
    printed = tmp_path / "printed.pdf"
    spans = renderer.render(letters, printed)
    assert len(spans) == len(letters)
    assert renderer.stamped == len(letters) - 1  # all but LAID_OUT
    for number, span in enumerate(spans, start=1):
        assert page_pixels(printed, span.first_page) == page_pixels(whole, number)


def test_member_data_outside_a_slot_is_refused(tmp_path: Path) -> None:
    """Only slots may print member data: anything else is laid out once for every letter."""
    letters_dir = tmp_path / "letters"
    shutil.copytree(check_templates(), letters_dir)
    welcome = letters_dir / "first_access.html"
    welcome.write_text(
        welcome.read_text().replace("{% block intro %}", "{% block intro %}{{ letter.code }}")
    )
    with pytest.raises(NotReady, match="template is broken") as caught:
        LetterRenderer(letters_dir).render(THREE[:1], tmp_path / "x.pdf")
    assert THREE[0].code not in str(caught.value)


def test_a_kind_longer_than_a_page_is_refused(tmp_path: Path) -> None:
    letters_dir = tmp_path / "letters"
    shutil.copytree(check_templates(), letters_dir)
    welcome = letters_dir / "first_access.html"
    filler = "<p>Un paragraphe de plus.</p>" * 60
    welcome.write_text(
        welcome.read_text().replace("{% block intro %}", "{% block intro %}" + filler)
    )
    with pytest.raises(NotReady, match=r"first_access letter \(welcome\) must fit on one page"):
        LetterRenderer(letters_dir).render(THREE[:1], tmp_path / "x.pdf")


def test_duplex_gives_every_letter_an_even_number_of_pages(
    renderer: LetterRenderer, tmp_path: Path
) -> None:
    out = tmp_path / "duplex.pdf"
    spans = renderer.render(THREE, out, duplex=True)
    reader = pypdf.PdfReader(out)
    assert all(span.page_count % 2 == 0 for span in spans)
    assert len(reader.pages) == sum(span.page_count for span in spans)
    for letter, span in zip(THREE, spans, strict=True):
        assert letter.code in squeeze(reader.pages[span.first_page - 1].extract_text())
        back = reader.pages[span.first_page + span.page_count - 2]
        assert back.extract_text().strip() == ""  # the added page is blank, footer included


@pytest.mark.slow  # starts rendering processes
def test_pool_renders_the_same_pages_as_in_process(tmp_path: Path) -> None:
    def chunks(folder: str) -> list[tuple[Path, tuple[LetterContent, ...]]]:
        (tmp_path / folder).mkdir()
        return [(tmp_path / folder / "a.pdf", THREE[:2]), (tmp_path / folder / "b.pdf", THREE[2:])]

    alone = list(render_chunks(chunks("alone"), duplex=True, workers=1))
    pooled = list(render_chunks(chunks("pooled"), duplex=True, workers=2))
    assert [spans for _, spans in pooled] == [spans for _, spans in alone]
    assert [path.name for path, _ in pooled] == ["a.pdf", "b.pdf"]
    for path, spans in pooled:
        assert len(pypdf.PdfReader(path).pages) == sum(s.page_count for s in spans)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_chunks_are_built_only_as_rendering_needs_them(tmp_path: Path, workers: int) -> None:
    """Memory stays flat: a large batch is never pulled into memory all at once."""
    pulled = []

    def chunks():
        for number in range(12):
            pulled.append(number)
            yield tmp_path / f"{number}.pdf", (THREE[number % 3],)

    rendered = render_chunks(chunks(), workers=workers)
    next(rendered)
    assert len(pulled) <= 2 * workers
    rendered.close()  # stopping early cancels what is queued


def test_a_template_using_an_unknown_field_is_refused(tmp_path: Path) -> None:
    letters_dir = tmp_path / "letters"
    shutil.copytree(check_templates(), letters_dir)
    welcome = letters_dir / "first_access.html"
    welcome.write_text(
        welcome.read_text().replace(
            "{% block intro %}", "{% block intro %}{{ letter.no_such_field }}"
        )
    )
    with pytest.raises(NotReady, match="no_such_field") as caught:
        LetterRenderer(letters_dir).render(THREE[:1], tmp_path / "x.pdf")
    assert THREE[0].code not in str(caught.value)
    assert not (tmp_path / "x.pdf").exists()


def test_a_missing_template_means_not_ready(tmp_path: Path) -> None:
    (tmp_path / "letter.css").write_text("")
    with pytest.raises(NotReady, match=r"_document\.html") as caught:
        check_templates(tmp_path)
    assert caught.value.exit_code == 5


def test_french_dates_do_not_depend_on_the_locale() -> None:
    assert french_date(date(2026, 11, 23)) == "23 novembre 2026"
    assert french_date(date(2026, 12, 1)) == "1er décembre 2026"
    assert french_date(date(2027, 2, 9)) == "9 février 2027"


def test_the_code_never_shows_in_repr() -> None:
    assert "482913" not in repr(THREE[0])
    with pytest.raises(ValueError, match="6 digits") as caught:
        make_letter(1, "welcome", code="12345")
    assert "12345" not in str(caught.value)


def test_only_a_preview_is_marked_specimen(renderer: LetterRenderer, three, tmp_path: Path) -> None:
    out = tmp_path / "preview.pdf"
    renderer.render([sample_content("pin_reset", today=date(2026, 1, 1))], out)
    text = pypdf.PdfReader(out).pages[0].extract_text()
    assert "SPÉCIMEN" in squeeze(text)
    assert "Paris, le 1er janvier 2026" in text
    _, reader = three
    assert not any("SPÉCIMEN" in squeeze(page.extract_text()) for page in reader.pages)


def test_a_slot_printing_the_letter_id_is_laid_out_for_every_letter(tmp_path: Path) -> None:
    """Restamping knows the reference, NIR, address and code; a slot that prints anything
    else of the letter's own (here its id) makes its group laid out letter by letter."""
    letters_dir = tmp_path / "letters"
    shutil.copytree(check_templates(), letters_dir)
    slots = letters_dir / "_slots.html"
    slots.write_text(
        slots.read_text().replace(
            "{{ letter.closing_title }},", "{{ letter.closing_title }} (n° {{ letter.letter_id }}),"
        )
    )
    renderer = LetterRenderer(letters_dir)
    out = tmp_path / "ids.pdf"
    letters = [replace(THREE[0], letter_id=n, reference=f"L{n:08d}") for n in (501, 502)]
    renderer.render(letters, out)
    assert renderer.stamped == 0
    reader = pypdf.PdfReader(out)
    for number, page in enumerate(reader.pages):
        assert f"(n° {letters[number].letter_id})" in page.extract_text()
