"""Render letters to print-ready PDF, fast: a group's page is laid out once, not per letter.

Laying text out is most of WeasyPrint's work, and nearly all of a letter's text is the same
for every letter of its group (kind, wording, civility, and the batch's dates: see
`stamp.prototype_key`). So a `LetterRenderer` lays each group's page out once (its kind's text
and the slots the group shares: date, salutation, expiry, closing), with the slots holding
each letter's own data (reference and NIR, address, code: templates/letters/_slots.html) left
empty, and notes where they landed. Those slots are laid out once more, with markers, as the
group's prototype overlay; each letter's overlay is that prototype with the markers' text
boxes re-shaped for its values (`stamp`), or, where that cannot be exact, its slots laid out
in full. Every overlay page is printed over its group's page, which is stored once in the file
as a form XObject (pikepdf). `document_html` gives the same letters laid out whole: what the
naive loop of bench/letters.py renders and what tests compare the print with, to the pixel.

A renderer also parses the CSS once and keeps one FontConfiguration, so fonts are subset once
per file. WeasyPrint and pikepdf are imported only when a renderer is built; `pdf_file`
assembles the file and names each font subset after its own glyphs.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.runtime

from cpms_admin.errors import NotReady
from cpms_admin.french import french_date
from cpms_admin.letters.pdf.content import LetterContent
from cpms_admin.settings import templates_dir
from cpms_admin.vocabulary import Wording

if TYPE_CHECKING:
    from cpms_admin.letters.pdf.stamp import Prototype

STYLESHEET = "letter.css"
DOCUMENT_TEMPLATE = "_document.html"
OVERLAY_TEMPLATE = "_overlay.html"
SLOTS_TEMPLATE = "_slots.html"
SLOT_ANCHOR = "slot-"


@dataclass(frozen=True)
class PageSpan:
    """Where one letter sits in its PDF file: pages `first_page` (1-based) onwards."""

    letter_id: int
    first_page: int
    page_count: int


@dataclass(frozen=True)
class SlotBox:
    """Where a slot landed on its kind's page: CSS px from the page's top left corner."""

    name: str
    left: float
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class Backdrop:
    """A kind's page laid out with its slots empty, as a one-page PDF, and where the slots are."""

    slots: tuple[SlotBox, ...]
    pdf: bytes


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


@functools.cache  # once a process: the batch, the pool and each renderer ask in turn
def _checked_environment(letters_dir: Path) -> jinja2.Environment:
    if not (letters_dir / STYLESHEET).is_file():
        raise NotReady(f"letter stylesheet missing: {letters_dir / STYLESHEET}")
    env = template_environment(letters_dir)
    templates = (DOCUMENT_TEMPLATE, OVERLAY_TEMPLATE, SLOTS_TEMPLATE)
    for name in (*templates, *(f"{wording}.html" for wording in Wording)):
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


def renderer_for(letters_dir: Path | None = None) -> "LetterRenderer":
    """The process's renderer for `letters_dir` (the installed templates by default): what it
    parsed and laid out serves every later file, of this batch or the next one."""
    return _renderer_in(letters_dir or letters_templates_dir())


@functools.cache  # keyed by the folder itself: the default named or not is one renderer
def _renderer_in(letters_dir: Path) -> "LetterRenderer":
    return LetterRenderer(letters_dir)


class LetterRenderer:
    """One per process and template folder (`renderer_for`): it holds the parsed CSS, the fonts
    and the laid-out pages, and renders many files."""

    def __init__(self, letters_dir: Path | None = None) -> None:
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration

        from cpms_admin.letters.pdf.stamp import shaper

        self.letters_dir = letters_dir or letters_templates_dir()
        self._env = _checked_environment(self.letters_dir)
        self._fonts = FontConfiguration()
        self._css = CSS(filename=str(self.letters_dir / STYLESHEET), font_config=self._fonts)
        self._backdrops: dict[LetterContent, Backdrop] = {}  # by group (`prototype_key`)
        self._unstampable: set[LetterContent] = set()
        self._prototypes: dict[LetterContent, Prototype] = {}
        self._shape = shaper()
        self._blank_page: Any = None
        self.stamped = 0  # letters whose slots were restamped rather than laid out

    def document_html(
        self, letters: Sequence[LetterContent], *, stylesheet: str | None = None
    ) -> str:
        """The HTML of `letters` laid out whole; `stylesheet` links the CSS (naive path)."""
        pages = [(letter.layout, letter) for letter in letters]
        return self._html(
            DOCUMENT_TEMPLATE, pages=pages, stylesheet=stylesheet, blank_slots=(), group=None
        )

    def render(
        self, letters: Sequence[LetterContent], out_path: Path, *, duplex: bool = False
    ) -> list[PageSpan]:
        """Write all `letters` into the one PDF `out_path`, one page each.

        With `duplex`, a blank page follows each letter so that no letter starts on the back
        of another's sheet.
        """
        if not letters:
            raise ValueError("no letters to render")
        ids = [letter.letter_id for letter in letters]
        if len(set(ids)) != len(ids):
            raise ValueError("the same letter twice in one file")
        from cpms_admin.letters.pdf.stamp import prototype_key

        keys = [prototype_key(letter) for letter in letters]
        backdrops = [self._backdrop(key) for key in keys]
        overlay, overlay_pages = self._overlays(letters, keys, backdrops)
        pages: list[Any] = []
        under: list[Backdrop | None] = []
        spans = []
        for letter_id, page, backdrop in zip(ids, overlay_pages, backdrops, strict=True):
            spans.append(PageSpan(letter_id, len(pages) + 1, 2 if duplex else 1))
            pages.append(page)
            under.append(backdrop)
            if duplex:
                pages.append(self._blank())
                under.append(None)
        from cpms_admin.letters.pdf.pdf_file import print_over

        backdrop_pdfs = [backdrop.pdf if backdrop else None for backdrop in under]
        print_over(overlay.copy(pages).write_pdf(), backdrop_pdfs, out_path)
        return spans

    def _overlays(
        self,
        letters: Sequence[LetterContent],
        keys: Sequence[LetterContent],
        backdrops: Sequence[Backdrop],
    ) -> tuple[Any, list[Any]]:
        """Each letter's slots as a page: its group's prototype restamped (`stamp`), or, where
        that cannot be exact, laid out in full; and a Document to copy the pages from."""
        from cpms_admin.letters.pdf.stamp import stamp

        pages: list[Any] = []
        document = None
        for letter, key, backdrop in zip(letters, keys, backdrops, strict=True):
            prototype = self._prototype(key, backdrop)
            document = document or prototype.document
            stampable = key not in self._unstampable
            pages.append(stamp(prototype, letter, self._shape) if stampable else None)
        if missing := [n for n, page in enumerate(pages) if page is None]:
            html = self._html(
                OVERLAY_TEMPLATE, pages=[(letters[n], backdrops[n].slots) for n in missing]
            )
            laid_out = self._overlay_document(html, len(missing))
            for n, page in zip(missing, laid_out.pages, strict=True):
                pages[n] = page
        self.stamped += len(letters) - len(missing)
        return document, pages

    def _prototype(self, key: LetterContent, backdrop: Backdrop) -> "Prototype":
        """The overlay of `key`'s group, laid out once with its markers."""
        from cpms_admin.letters.pdf.stamp import Prototype, find_stamps

        prototype = self._prototypes.get(key)
        if prototype is None:
            html = self._html(OVERLAY_TEMPLATE, pages=[(key, backdrop.slots)])
            document = self._overlay_document(html, 1)
            stamps = find_stamps(document.pages[0])
            prototype = self._prototypes[key] = Prototype(document.pages[0], document, stamps)
        return prototype

    def _overlay_document(self, html: str, count: int) -> Any:
        document = self._layout(html)
        if len(document.pages) != count:
            raise NotReady("letter slots must be placed absolutely, one overlay page per letter")
        return document

    def _backdrop(self, key: LetterContent) -> Backdrop:
        """The page of `letter`'s group: its kind's text and the slots every letter of the
        group shares (date, salutation, expiry, closing) laid out once; the slots holding
        each letter's own data left empty, and where they are. `key`: the group
        (`stamp.prototype_key`)."""
        backdrop = self._backdrops.get(key)
        if backdrop is None:
            layout, blank = key.layout, self._own_slots(key)
            html = self._html(
                DOCUMENT_TEMPLATE,
                pages=[(layout, None)],
                group=key,
                blank_slots=blank,
                stylesheet=None,
            )
            document = self._layout(html)
            if len(document.pages) != 1:
                raise NotReady(
                    f"the {layout.wording} letter ({layout.kind}) must fit on one page: "
                    f"shorten the text of {layout.wording}.html"
                )
            slots = tuple(
                SlotBox(name.removeprefix(SLOT_ANCHOR), left, top, right - left, bottom - top)
                for name, (left, top, right, bottom) in document.pages[0].anchors.items()
                if name.startswith(SLOT_ANCHOR)
            )
            backdrop = self._backdrops[key] = Backdrop(slots, document.write_pdf())
        return backdrop

    def _own_slots(self, key: LetterContent) -> tuple[str, ...]:
        """The slots that print a letter's own data (a marker of `key`): every slot, and no
        restamping for the group, when one prints something else that differs per letter
        (its id)."""
        from cpms_admin.letters.pdf.stamp import MARKERS

        module = _load(self._env, SLOTS_TEMPLATE, self.letters_dir).make_module()
        macros = {n: m for n, m in vars(module).items() if isinstance(m, jinja2.runtime.Macro)}
        own, other = [], replace(key, letter_id=key.letter_id + 1)
        for name, macro in macros.items():
            text = str(macro(key))
            if text != str(macro(other)):
                self._unstampable.add(key)
                return tuple(macros)
            if any(marker in text for marker in MARKERS):
                own.append(name)
        return tuple(own)

    def _html(self, name: str, **context: Any) -> str:
        template = _load(self._env, name, self.letters_dir)
        try:
            return template.render(**context)
        except jinja2.TemplateError as exc:
            # Jinja's message names the template construct, never a rendered value.
            raise NotReady(f"letter template is broken: {exc}") from None

    def _layout(self, html: str) -> Any:
        from weasyprint import HTML

        document = HTML(string=html, base_url=str(self.letters_dir))
        return document.render(stylesheets=[self._css], font_config=self._fonts)

    def _blank(self) -> Any:
        """One empty A4 page (shared: a page is only read when the PDF is written)."""
        if self._blank_page is None:
            blank = self._layout('<!DOCTYPE html><div class="spare-page"></div>')
            self._blank_page = blank.pages[0]
        return self._blank_page
