"""Each letter's slots without laying the page out again: a laid-out prototype, restamped.

The letters of a batch that share everything but their own data (reference, masked NIR,
address lines, code) differ, once laid out, only in the text of a few line boxes: same
fonts, same places. So the slots of one letter of each such group are laid out once with
markers in place of its own data (a `Prototype`), and every letter of the group is that
page with the markers' text boxes re-shaped for its values by the same function WeasyPrint
lays text out with (`split_text_box`: Pango shapes the text, nothing else is recomputed). A
value that would not land exactly where a full layout puts it (a line that would wrap or
move its neighbours, another line height, white space WeasyPrint would collapse) makes
`stamp` return None, and that letter is laid out in full. The pixel test compares both with
the whole letter.
"""

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cpms_admin.letters.pdf.content import LetterContent

MARK = "qZq"  # lower case: a text-transform that would change the values changes it too
CODE_MARK = "000000"  # the code must stay 6 digits; it is matched as a whole text box
FIELDS = ("reference", "nir_masked", "code")
MAX_LINES = 7
EPSILON = 1e-6


def _line_mark(number: int) -> str:
    return f"{MARK}L{number}{MARK}"


def markers() -> dict[str, str]:
    """Marker -> the field (or `line<N>`) whose value replaces it."""
    found = {f"{MARK}{name}{MARK}": name for name in FIELDS if name != "code"}
    found[CODE_MARK] = "code"
    found.update({_line_mark(n): f"line{n}" for n in range(MAX_LINES)})
    return found


MARKERS = tuple(markers())


def prototype_key(letter: LetterContent) -> LetterContent:
    """The letter with its own data replaced by markers: letters with equal keys share one
    prototype (their kind, wording, civility and the batch's dates)."""
    return replace(
        letter,
        letter_id=0,
        reference=f"{MARK}reference{MARK}",
        nir_masked=f"{MARK}nir_masked{MARK}",
        code=CODE_MARK,
        recipient_lines=tuple(_line_mark(n) for n in range(MAX_LINES)),
    )


def values_of(letter: LetterContent) -> dict[str, str | None]:
    """Field (or `line<N>`) -> the letter's value; None for an address line it has not."""
    values: dict[str, str | None] = {name: getattr(letter, name) for name in FIELDS}
    lines = letter.recipient_lines
    values.update({f"line{n}": lines[n] if n < len(lines) else None for n in range(MAX_LINES)})
    return values


@dataclass(frozen=True)
class Stamp:
    """Where one marker's text box sits, and how a new value may move it."""

    path: tuple[int, ...]  # child indexes from the page box down to the text box
    box: Any  # the marker's TextBox
    align: str  # "start", "center" or "end": its line's alignment
    only_leaf: bool  # alone on its line (a centred line moves with its width)
    last_leaf: bool  # nothing after it on its line
    fixed_width: bool  # an inline box around it draws something: its width must not change
    available: float  # the line's available width
    limit: float | None  # the right edge a wrapping line must not pass (None: no wrapping)


@dataclass
class Prototype:
    page: Any  # weasyprint Page
    document: Any  # its weasyprint Document (pages are copied from it)
    stamps: dict[str, Stamp] | None  # field -> stamp; None: this layout cannot be stamped


def find_stamps(page: Any) -> dict[str, Stamp] | None:
    """The stamps of a laid-out prototype page; None when a marker is not one whole text box
    of its own, or the page holds links, anchors or forms (they point into its boxes)."""
    from weasyprint.formatting_structure import boxes

    if page.links or page.bookmarks or page.anchors or any(page.forms.values()):
        return None
    wanted = markers()
    found: dict[str, Stamp] = {}
    stray = False

    def visit(box: Any, path: tuple[int, ...], line: Any, block: Any, inline: list[Any]) -> None:
        nonlocal stray
        if isinstance(box, boxes.TextBox):
            field = wanted.get(box.text)
            if field is None:
                stray |= any(mark in box.text for mark in (MARK, CODE_MARK))
                return
            if field in found or line is None:
                stray = True
                return
            found[field] = _stamp(box, path, line, block, inline)
            return
        if isinstance(box, boxes.LineBox):
            line = box
        elif isinstance(box, boxes.BlockContainerBox):
            block = box
        elif isinstance(box, boxes.InlineBox):
            inline = [*inline, box]
        for index, child in enumerate(getattr(box, "children", ())):
            visit(child, (*path, index), line, block, inline)

    visit(page._page_box, (), None, None, [])
    if stray or set(found) != set(wanted.values()):
        return None
    return found


def _stamp(box: Any, path: tuple[int, ...], line: Any, block: Any, inline: list[Any]) -> Stamp:
    from weasyprint.formatting_structure import boxes

    leaves = [
        leaf for leaf in line.descendants() if not isinstance(leaf, boxes.ParentBox) and leaf.width
    ]
    style = line.style
    align = style["text_align_all"]
    if align in ("left", "right"):
        align = "start" if (align == "left") != (style["direction"] == "rtl") else "end"
    wraps = style["white_space"] in ("normal", "pre-wrap", "pre-line")
    return Stamp(
        path=path,
        box=box,
        align=align,
        only_leaf=leaves == [box],
        last_leaf=bool(leaves) and leaves[-1] is box,
        fixed_width=any(_draws(ancestor) for ancestor in inline),
        available=block.width,
        limit=block.content_box_x() + block.width if wraps else None,
    )


def _draws(box: Any) -> bool:
    """Whether an inline box paints something sized by its width."""
    style = box.style
    painted = style["background_color"].alpha > 0 or any(
        image[0] != "none" for image in style["background_image"]
    )
    bordered = any(style[f"border_{side}_width"] for side in ("top", "right", "bottom", "left"))
    return painted or bordered or bool(style["text_decoration_line"] != "none")


def _offset(stamp: Stamp, width: float) -> float:
    if stamp.align == "start" or width >= stamp.available:
        return 0.0
    extra = stamp.available - width
    return extra / 2 if stamp.align == "center" else extra


def stamp(prototype: Prototype, letter: LetterContent, shape: Callable[[Any, str], Any]) -> Any:
    """The prototype's page with `letter`'s values in place of the markers, as a new Page;
    None when a value would not land where a full layout puts it. `shape(box, text)` lays
    the text out as the box's (WeasyPrint's `split_text_box`)."""
    stamps = prototype.stamps
    if stamps is None:
        return None
    replacements: dict[tuple[int, ...], Any] = {}
    for field, value in values_of(letter).items():
        spec = stamps[field]
        if value is None:
            replacements[spec.path] = None
            continue
        if not value or value != " ".join(value.split()) or value.strip() != value:
            return None  # white space a layout would collapse
        new = shape(spec.box, value)
        if new is None or not _lands(spec, new):
            return None
        replacements[spec.path] = new
    page = copy.copy(prototype.page)
    page._page_box = _rebuild(prototype.page._page_box, sorted(replacements.items()), 0)
    return page


def _lands(spec: Stamp, new: Any) -> bool:
    """Place `new` as a full layout would, or say it cannot be (False)."""
    old = spec.box
    if abs(new.height - old.height) > EPSILON or abs(new.baseline - old.baseline) > EPSILON:
        return False  # another font (a fallback for an unusual character): another line height
    new.position_y, new.margin_top, new.margin_bottom = (
        old.position_y,
        old.margin_top,
        old.margin_bottom,
    )
    if abs(new.width - old.width) <= EPSILON:
        new.position_x = old.position_x
        return True
    if spec.fixed_width or not spec.last_leaf or (spec.align != "start" and not spec.only_leaf):
        return False
    new.position_x = old.position_x + _offset(spec, new.width) - _offset(spec, old.width)
    return spec.limit is None or new.position_x + new.width <= spec.limit + EPSILON


def _rebuild(box: Any, replacements: Sequence[tuple[tuple[int, ...], Any]], depth: int) -> Any:
    """A copy of `box` with the boxes at the given paths replaced (None: removed); only the
    boxes on those paths are copied, the rest is shared with the prototype."""
    if len(replacements) == 1 and len(replacements[0][0]) == depth:
        return replacements[0][1]
    by_child: dict[int, list[tuple[tuple[int, ...], Any]]] = {}
    for path, new in replacements:
        by_child.setdefault(path[depth], []).append((path, new))
    copied = box.copy()
    children = list(box.children)
    for index, group in by_child.items():
        children[index] = _rebuild(box.children[index], group, depth + 1)
    copied.children = [child for child in children if child is not None]
    return copied


def shaper() -> Callable[[Any, str], Any]:
    """`shape(box, text)`: the text box WeasyPrint would lay out for `text` on one line, or
    None when it would not fit on one."""
    from weasyprint.layout.inline import split_text_box

    context = _ShapingContext()

    def shape(box: Any, text: str) -> Any:
        new, resume_at, _ = split_text_box(context, box.copy_with_text(text), math.inf, 0)
        return None if new is None or resume_at is not None else new

    return shape


class _ShapingContext:
    """What `split_text_box` reads of a layout context: hyphenation dictionaries only."""

    def __init__(self) -> None:
        self.dictionaries: dict[Any, Any] = {}
