"""Where things go on an A4 letter folded into a window envelope (DL or C5/6), in millimetres
from the page's top left corner. The stylesheet (templates/letters/letter.css) places the
blocks; the tests read the printed text's positions back and check them against these zones.

- The address window shows the recipient's block: La Poste's address zone. With its margin
  (the clear zone) it holds the recipient's address and nothing else: no date, no reference,
  no return address, so that the sorting machines read only the address.
- The return address (`CPMS_LETTER_RETURN_ADDRESS`) shows through the return window of a
  double-window envelope, at the top left; a print house that prints it on the back flap
  instead finds it in the batch's manifest. NPAI letters come back to it.
- The address block is set in the letter's size, or smaller when a line of 38 characters
  of wide capitals (`MME MARIE-MAUDE WOJCIECHOWSKA-DOMMANGE`: 89.6 mm) would run past the window.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cpms_admin.errors import NotReady
from cpms_admin.french import french_date
from cpms_admin.settings import RETURN_ADDRESS_LINES, Settings, return_address_lines

__all__ = ["RETURN_ADDRESS_LINES", "return_address_lines"]

PAGE_WIDTH, PAGE_HEIGHT = 210.0, 297.0
CLEAR_MARGIN = 5.0  # around the address window, kept free of any other print
EPSILON = 0.01


@dataclass(frozen=True)
class Zone:
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def grown(self, margin: float) -> "Zone":
        return Zone(
            self.left - margin, self.top - margin, self.width + 2 * margin, self.height + 2 * margin
        )

    def holds(self, left: float, top: float, right: float, bottom: float) -> bool:
        """Whether the box lies inside (to 0.01 mm: positions printed are rounded)."""
        left, top, right, bottom = left + EPSILON, top + EPSILON, right - EPSILON, bottom - EPSILON
        return (
            self.left <= left and right <= self.right and self.top <= top and bottom <= self.bottom
        )

    def meets(self, left: float, top: float, right: float, bottom: float) -> bool:
        return left < self.right and self.left < right and top < self.bottom and self.top < bottom


ADDRESS_WINDOW = Zone(left=110, top=55, width=85, height=33)
ADDRESS_CLEAR = ADDRESS_WINDOW.grown(CLEAR_MARGIN)
RETURN_WINDOW = Zone(left=20, top=27, width=80, height=18)

ADDRESS_SIZES = (10.0, 9.0, 8.0)  # pt: the letter's own size first, down to 8 pt
RETURN_ADDRESS_PT = 8.5  # letter.css's .sender
ADDRESS_FONT_FILE = "LiberationSans-Regular.ttf"  # letter.css's .slot font (fonts-liberation2)
FONT_FOLDERS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
MM_PER_PT = 25.4 / 72
LETTER_PT = 10.0  # letter.css's html
# letter.css: the page's text is 175 mm wide (20 and 15 mm margins), the date line starts
# 90 mm into it.
DATELINE_WIDTH = PAGE_WIDTH - 20 - 15 - 90
# The widest date of each month: its 1st (`1er`), or a day of two digits (all as wide).
_WIDEST_DATES = [date(2026, month, day) for month in range(1, 13) for day in (1, 28)]


def address_size(lines: Sequence[str]) -> float | None:
    """The largest of ADDRESS_SIZES at which every line fits the window's width, None if
    none does. Measured with the font's own advance widths, which the printed widths match
    to a few tenths of a millimetre (tests/test_letters_zones.py reads them back)."""
    widest = max(map(_ems, lines), default=0.0)
    return next(
        (size for size in ADDRESS_SIZES if widest * size * MM_PER_PT <= ADDRESS_WINDOW.width),
        None,
    )


def return_address(settings: Settings) -> tuple[str, ...]:
    """CPMS_LETTER_RETURN_ADDRESS's lines, each checked to fit the return window's width
    (NotReady: a setting to fix before any letter is printed)."""
    lines = return_address_lines(settings.letter_return_address)
    for line in lines:
        width = _ems(line) * RETURN_ADDRESS_PT * MM_PER_PT
        if width > RETURN_WINDOW.width:
            raise NotReady(
                f"CPMS_LETTER_RETURN_ADDRESS: line {line!r} is {width:.1f} mm wide in the "
                f"letters' {RETURN_ADDRESS_PT:g} pt, more than the return window's "
                f"{RETURN_WINDOW.width:g} mm: shorten it"
            )
    return lines


def letterhead(settings: Settings) -> tuple[str, ...]:
    """What the letters print from the settings, each checked to fit its place (NotReady
    naming the setting): the return address, whose lines it returns, and the date line's
    city. Before any letter is laid out: the batch, a preview and `doctor` ask it."""
    lines = return_address(settings)
    check_place(settings)
    return lines


def check_place(settings: Settings) -> None:
    """NotReady unless CPMS_LETTER_CITY fits the date line beside the longest date (a longer
    one would wrap over the letter's body: a setting to fix before any letter is printed)."""
    city = settings.letter_city
    width = (
        max(_ems(f"{city}, le {french_date(day)}") for day in _WIDEST_DATES) * LETTER_PT * MM_PER_PT
    )
    if width > DATELINE_WIDTH:
        raise NotReady(
            f"CPMS_LETTER_CITY {city!r} makes a date line {width:.1f} mm wide in the letters' "
            f"{LETTER_PT:g} pt, more than its {DATELINE_WIDTH:g} mm: shorten it"
        )


@functools.lru_cache(maxsize=65536)  # names, streets and towns repeat across a batch
def _ems(line: str) -> float:
    """The line's width in ems of the address font; a character it lacks counts as its widest."""
    advances, widest, units = _metrics()
    return sum(advances.get(ord(char), widest) for char in line) / units


FONT_MISSING = f"the letters' font {ADDRESS_FONT_FILE} is missing"
FONT_FIX = "apt-get install fonts-liberation2"


def address_font() -> Path | None:
    """The address font's file, wherever fontconfig's folders hold it; None when none does."""
    return next(
        (path for folder in FONT_FOLDERS for path in sorted(folder.rglob(ADDRESS_FONT_FILE))), None
    )


@functools.cache
def _metrics() -> tuple[dict[int, int], int, int]:
    """The address font's advance width per code point, its widest, and its units per em."""
    from fontTools.ttLib import TTFont

    found = address_font()
    if found is None:
        raise NotReady(f"{FONT_MISSING}: {FONT_FIX}")
    with TTFont(found, lazy=True) as font:
        widths = font["hmtx"].metrics
        advances = {code: widths[glyph][0] for code, glyph in font.getBestCmap().items()}
        return advances, font["hhea"].advanceWidthMax, font["head"].unitsPerEm
