"""Render letters to print-ready PDF: many letters per file, one WeasyPrint set-up per process.

A naive loop (`HTML(...).write_pdf()` per letter) re-parses the CSS, re-creates the font
configuration and subsets the fonts for every letter. Here a `LetterRenderer` parses the CSS
once, keeps one `FontConfiguration`, and lays out a whole chunk of letters as one document, so
fonts are subset once per file. WeasyPrint is imported only when a renderer is built.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from cpms_admin.errors import NotReady
from cpms_admin.french import french_date
from cpms_admin.letters.content import LETTER_KINDS, LetterContent
from cpms_admin.resources import templates_dir

STYLESHEET = "letter.css"
DOCUMENT_TEMPLATE = "_document.html"
ANCHOR_PREFIX = "letter-"


@dataclass(frozen=True)
class PageSpan:
    """Where one letter sits in its PDF file: pages `first_page` (1-based) onwards."""

    letter_id: int
    first_page: int
    page_count: int


def letters_templates_dir() -> Path:
    return templates_dir() / "letters"


def template_environment(letters_dir: Path) -> jinja2.Environment:
    """Autoescaped and strict: member data prints as typed, a misspelt field fails loudly."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(letters_dir),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    env.filters["french_date"] = french_date
    return env


def check_templates(letters_dir: Path | None = None) -> Path:
    """Fail early, with the file's name, if a template or the stylesheet is missing or broken.

    Cheap (no WeasyPrint): the batch calls it before starting workers, `doctor` can too.
    """
    letters_dir = letters_dir or letters_templates_dir()
    _checked_environment(letters_dir)
    return letters_dir


def _checked_environment(letters_dir: Path) -> jinja2.Environment:
    if not (letters_dir / STYLESHEET).is_file():
        raise NotReady(f"letter stylesheet missing: {letters_dir / STYLESHEET}")
    env = template_environment(letters_dir)
    for name in (DOCUMENT_TEMPLATE, *(f"{kind}.html" for kind in LETTER_KINDS)):
        _load(env, name, letters_dir)
    return env


def _load(env: jinja2.Environment, name: str, letters_dir: Path) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateNotFound as exc:
        raise NotReady(f"letter template missing: {exc.name} in {letters_dir}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise NotReady(
            f"letter template {exc.name} is broken, line {exc.lineno}: {exc.message}"
        ) from None


class LetterRenderer:
    """Build once per process (it holds the parsed CSS and fonts), then render many files."""

    def __init__(self, letters_dir: Path | None = None) -> None:
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration

        self.letters_dir = letters_dir or letters_templates_dir()
        self._env = _checked_environment(self.letters_dir)
        self._fonts = FontConfiguration()
        self._css = CSS(filename=str(self.letters_dir / STYLESHEET), font_config=self._fonts)
        self._blank_page: Any = None

    def document_html(
        self, letters: Sequence[LetterContent], *, stylesheet: str | None = None
    ) -> str:
        """The HTML of one document holding `letters`; `stylesheet` links the CSS (naive path)."""
        template = _load(self._env, DOCUMENT_TEMPLATE, self.letters_dir)
        try:
            return template.render(letters=letters, stylesheet=stylesheet)
        except jinja2.TemplateError as exc:
            # Jinja's message names the template construct, never a rendered value.
            raise NotReady(f"letter template is broken: {exc}") from None

    def render(
        self, letters: Sequence[LetterContent], out_path: Path, *, duplex: bool = False
    ) -> list[PageSpan]:
        """Write all `letters` into the one PDF `out_path`, each starting on a new sheet side.

        With `duplex`, every letter gets an even number of pages (a blank page is added where
        needed) so that no letter starts on the back of another's last sheet.
        """
        from weasyprint import HTML

        if not letters:
            raise ValueError("no letters to render")
        ids = [letter.letter_id for letter in letters]
        if len(set(ids)) != len(ids):
            raise ValueError("the same letter twice in one file")
        html = HTML(string=self.document_html(letters), base_url=str(self.letters_dir))
        document = html.render(stylesheets=[self._css], font_config=self._fonts)
        starts = _first_pages(document.pages)
        if set(ids) - set(starts):
            raise NotReady(f"letter templates must keep id={ANCHOR_PREFIX}<id> on each section")
        bounds = [starts[letter_id] for letter_id in ids] + [len(document.pages)]
        pages: list[Any] = []
        spans = []
        for letter_id, start, end in zip(ids, bounds, bounds[1:], strict=False):
            own = document.pages[start:end]
            if duplex and len(own) % 2:
                own.append(self._blank())
            spans.append(PageSpan(letter_id, len(pages) + 1, len(own)))
            pages.extend(own)
        document.copy(pages).write_pdf(out_path)
        return spans

    def _blank(self) -> Any:
        """One empty A4 page (shared: a page is only read when the PDF is written)."""
        if self._blank_page is None:
            from weasyprint import HTML

            blank = HTML(string='<!DOCTYPE html><div class="spare-page"></div>')
            document = blank.render(stylesheets=[self._css], font_config=self._fonts)
            self._blank_page = document.pages[0]
        return self._blank_page


def _first_pages(pages: Sequence[Any]) -> dict[int, int]:
    """Letter id -> index of the page holding the top of its section (its `id` anchor)."""
    starts: dict[int, int] = {}
    for index, page in enumerate(pages):
        for anchor in page.anchors:
            number = anchor.removeprefix(ANCHOR_PREFIX)
            if number != anchor and number.isdigit():
                starts.setdefault(int(number), index)
    return starts
