"""What a letter says, as plain values: a template needs nothing else, and a worker process
can receive it pickled. No WeasyPrint here, so the CLI can build letters cheaply."""

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from cpms_admin.errors import Unprintable
from cpms_admin.french import wait_phrase
from cpms_admin.letters.pdf import zones
from cpms_admin.members import afnor, postal
from cpms_admin.members import nir as nir_rules
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import Asker, LetterKind, Wording

SALUTATIONS = {"M": "Monsieur,", "MME": "Madame,"}
DEFAULT_PORTAL_URL = "https://adherent.cpms.fr"
SAMPLE_NIR = "185057800608491"
DEFAULT_RETURN_ADDRESS = (
    "CPMS – Service Adhérents",
    "Gestion des accès en ligne",
    "TSA 91234",
    "75901 PARIS CEDEX 15",
)
# Why an address block cannot be laid out, and as a letter's status reason (the member's
# dossier words the latter in French).
ADDRESS_NOT_AFNOR_SIZED = "address block is not AFNOR-sized"
ADDRESS_TOO_WIDE = (
    "an address line is wider than the envelope's window even in {} pt: shorten it "
    "(cpms-admin member update)"
)
NOT_AFNOR_SIZED = "letter {}: " + ADDRESS_NOT_AFNOR_SIZED
TOO_WIDE = "letter {}: " + ADDRESS_TOO_WIDE


def address_pt(lines: Sequence[str]) -> float:
    """The size an address block is set in: the largest its lines fit the window in.
    Unprintable, saying why, when the block has not the norm's shape or no size fits."""
    if not 3 <= len(lines) <= postal.MAX_LINES or any(
        not line or len(line) > afnor.MAX_LINE for line in lines
    ):
        raise Unprintable(ADDRESS_NOT_AFNOR_SIZED)
    fits = zones.address_size(lines)
    if fits is None:
        raise Unprintable(ADDRESS_TOO_WIDE.format(f"{zones.ADDRESS_SIZES[-1]:g}"))
    return fits


@dataclass(frozen=True)
class LockoutTerms:
    """What a letter tells of wrong PINs: after how many comes the first wait, and how long
    it is (`1 minute`); `first_wait` None when the block comes at once. The defaults are
    the default settings'."""

    max_failures: int = 3
    first_wait: str | None = "1 minute"

    @classmethod
    def of(cls, settings: Settings) -> "LockoutTerms":
        waits = settings.lockout_max_failures < settings.lockout_hard_after
        return cls(
            max_failures=settings.lockout_max_failures,
            first_wait=wait_phrase(settings.lockout_cooldown_seconds) if waits else None,
        )


@dataclass(frozen=True)
class LetterLayout:
    """What the fixed text of a letter depends on. Letters with equal layouts differ only in
    their slots (templates/letters/_slots.html), so one laid-out page serves them all."""

    kind: str
    wording: str  # which template: templates/letters/<wording>.html
    portal_url: str
    specimen: bool = False
    return_address: tuple[str, ...] = DEFAULT_RETURN_ADDRESS  # letters/zones.py
    lockout: LockoutTerms = LockoutTerms()
    asked_by: str = Asker.agent  # who asked for its code (`Asker`): the wording says so

    @property
    def portal_host(self) -> str:
        """The portal address as a member types it, without the scheme."""
        return re.sub(r"^https?://", "", self.portal_url).rstrip("/")


@dataclass(frozen=True)
class LetterContent:
    """One letter. `recipient_lines` is the whole AFNOR address block, the name first."""

    letter_id: int
    kind: str
    recipient_lines: tuple[str, ...]
    nir_masked: str
    # The only copy of the code in clear: kept out of repr() so it cannot leak into logs.
    code: str = field(repr=False)
    code_expires_on: date
    letter_date: date
    reference: str
    salutation: str
    portal_url: str
    place: str = "Paris"
    specimen: bool = False
    wording: str = ""  # why it was sent (`Wording`); empty: the kind's own
    return_address: tuple[str, ...] = DEFAULT_RETURN_ADDRESS  # where NPAI letters come back
    lockout: LockoutTerms = LockoutTerms()
    asked_by: str = Asker.agent  # `credentials.codes.asker` of the letter's `requested_by`
    # The address block's size in pt: the largest its lines fit the window in
    # (`zones.address_size`), or less if given: `replace` keeps it, so the prototype of a
    # letter (its lines replaced by short markers) is laid out in that letter's size.
    address_pt: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in set(LetterKind):
            raise ValueError(f"unknown letter kind {self.kind!r}")
        if not self.wording:
            object.__setattr__(self, "wording", LetterKind(self.kind).wording())
        if self.wording not in set(Wording):
            raise ValueError(f"unknown letter wording {self.wording!r}")
        if self.asked_by not in set(Asker):
            raise ValueError(f"unknown asker {self.asked_by!r}")
        if not re.fullmatch(r"\d{6}", self.code):
            raise ValueError(f"letter {self.letter_id}: the code must be 6 digits")
        try:
            fits = address_pt(self.recipient_lines)
        except Unprintable as exc:
            raise Unprintable(f"letter {self.letter_id}: {exc}") from None
        object.__setattr__(self, "address_pt", min(self.address_pt or fits, fits))

    @property
    def closing_title(self) -> str:
        """The salutation as repeated in the closing formula ("Madame, Monsieur")."""
        return self.salutation.rstrip(", ")

    @property
    def layout(self) -> LetterLayout:
        return LetterLayout(
            self.kind,
            self.wording,
            self.portal_url,
            self.specimen,
            self.return_address,
            self.lockout,
            self.asked_by,
        )


def salutation_for(civility: str | None) -> str:
    """The opening of the letter for a member's civility (`M`, `MME` or unknown)."""
    return SALUTATIONS.get(civility or "", "Madame, Monsieur,")


def letter_reference(letter_id: int) -> str:
    """The reference printed on the letter, which support agents can search for."""
    return f"L{letter_id:08d}"


def sample_content(
    kind: str,
    *,
    letter_id: int = 0,
    nir: str = SAMPLE_NIR,
    today: date | None = None,
    expires_on: date | None = None,
    portal_url: str = DEFAULT_PORTAL_URL,
    place: str = "Paris",
    wording: str = "",
    return_address: tuple[str, ...] = DEFAULT_RETURN_ADDRESS,
    lockout: LockoutTerms | None = None,
) -> LetterContent:
    """A realistic letter for `letters preview`, with a dummy code and a SPÉCIMEN watermark.
    Its code expires on `expires_on` (by default, a month after `today`)."""
    day = today or date.today()
    address = postal.make_address(
        street="12 rue des Lilas",
        complement="Appartement 12",
        building="Résidence Les Tilleuls Bât. B",
        postcode="42000",
        city="Saint-Étienne",
    )
    recipient = postal.recipient_line("MME", "Jeanne", "Dupont-Moreau")
    return LetterContent(
        letter_id=letter_id,
        kind=kind,
        recipient_lines=(recipient, *address.lines()),
        nir_masked=nir_rules.mask_nir(nir),
        code=f"{secrets.randbelow(10**6):06d}",
        code_expires_on=expires_on or day + timedelta(days=30),
        letter_date=day,
        reference=letter_reference(letter_id),
        salutation=salutation_for("MME"),
        portal_url=portal_url,
        place=place,
        specimen=True,
        wording=wording,
        return_address=return_address,
        lockout=lockout or LockoutTerms(),
    )
