"""Where things go on an A4 letter folded into a window envelope (DL or C5/6), in millimetres
from the page's top left corner. The stylesheet (templates/letters/letter.css) places the
blocks; the tests read the printed text's positions back and check them against these zones.

- The address window shows the recipient's block: La Poste's address zone. With its margin
  (the clear zone) it holds the recipient's address and nothing else: no date, no reference,
  no return address, so that the sorting machines read only the address.
- The return address (`CPMS_LETTER_RETURN_ADDRESS`) shows through the return window of a
  double-window envelope, at the top left; a print house that prints it on the back flap
  instead finds it in the batch's manifest. NPAI letters come back to it.
"""

from dataclasses import dataclass

from cpms_admin.settings import RETURN_ADDRESS_LINES, return_address_lines

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
