"""Helpers for the letter tests: a queue of members, `letters batch` as a script runs it, and
its result read back as the print house and the members see it (the batch directory, the
manifest and index against the PDFs read with pypdf, and the printed codes)."""

import csv
import hashlib
import itertools
import json
import re
import stat
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pikepdf
import pypdf
from sqlmodel import Session, select

from cpms_admin.clock import Clock
from cpms_admin.letters.pdf.content import LetterContent, salutation_for
from cpms_admin.members import postal
from cpms_admin.models import Letter, Member, pk
from cpms_admin.settings import Settings
from tests.cred_helpers import set_pin
from tests.factories import make_member, make_nir
from tests.harness import Cli

# The code: a line of its own, 6 letter-spaced digits (which extraction turns into blanks).
CODE_IN_TEXT = re.compile(r"^(\d(?: ?\d){5})\s*$", re.MULTILINE)
REFERENCE = re.compile(r"Notreréférence:L(\d{8})")


def queue_members(session: Session, count: int, **overrides: Any) -> list[Member]:
    """`count` new members, each with a welcome letter waiting in the queue."""
    return [make_member(session, nir=make_nir(), **overrides) for _ in range(count)]


def batch(cli: Cli, out: Path, *options: str) -> dict[str, Any]:
    """`letters batch --json`, which must succeed: its summary."""
    result = cli("--json", "letters", "batch", "--out", str(out), *options)
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def manifests(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(batch directory, its manifest) for every batch published under `out`."""
    return [
        (path.parent, json.loads(path.read_text())) for path in sorted(out.rglob("manifest.json"))
    ]


def assert_every_pdf_is_listed(out: Path) -> None:
    """No PDF looks finished unless a manifest beside it lists it."""
    for pdf in out.rglob("*.pdf"):
        manifest = pdf.parent / "manifest.json"
        assert manifest.exists(), f"{pdf} has no manifest beside it"
        assert pdf.name in {f["name"] for f in json.loads(manifest.read_text())["files"]}, pdf


def check_batch_dir(directory: Path, manifest: dict[str, Any]) -> None:
    """The manifest, the index and the files agree, page for page; everything is private."""
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert directory.name.startswith(f"batch-{manifest['batch_id']}-")
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["manifest.json", "index.csv", *(f["name"] for f in manifest["files"])]
    )
    pages = {}
    for entry in manifest["files"]:
        path = directory / entry["name"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        pages[entry["name"]] = len(pypdf.PdfReader(path).pages)
        assert pages[entry["name"]] == entry["pages"]
        check_font_tags(path)
    for name in pages:  # each file's letters tile its pages exactly
        spans = sorted(
            (le["first_page"], le["page_count"]) for le in manifest["letters"] if le["file"] == name
        )
        assert spans[0][0] == 1
        assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(spans))
        assert spans[-1][0] + spans[-1][1] - 1 == pages[name]
    with (directory / "index.csv").open(newline="", encoding="utf-8") as index:
        rows = list(csv.DictReader(index))
    assert [
        (int(r["letter_id"]), r["file"], int(r["first_page"]), int(r["last_page"])) for r in rows
    ] == [
        (le["letter_id"], le["file"], le["first_page"], le["first_page"] + le["page_count"] - 1)
        for le in manifest["letters"]
    ]


SUBSET_TAG = re.compile(r"^/([A-Z]{6})\+")


def font_programs(path: Path) -> dict[str, set[str]]:
    """Subset tag -> digests of the font programs named with it, for every font of a PDF
    (Type0 fonts through their CIDFont's descriptor)."""
    found: dict[str, set[str]] = {}
    with pikepdf.open(path) as pdf:
        for obj in pdf.objects:
            if not isinstance(obj, pikepdf.Dictionary) or obj.get("/Type") != "/Font":
                continue
            owner = obj.DescendantFonts[0] if "/DescendantFonts" in obj else obj
            descriptor = owner.get("/FontDescriptor")
            if descriptor is None:
                continue
            program = next(
                descriptor[k] for k in ("/FontFile2", "/FontFile3", "/FontFile") if k in descriptor
            )
            digest = hashlib.sha256(program.read_bytes()).hexdigest()
            for name in (obj.BaseFont, owner.BaseFont, descriptor.FontName):
                match = SUBSET_TAG.match(str(name))
                assert match, f"{path.name}: font {name} has no subset tag"
                found.setdefault(match[1], set()).add(digest)
    return found


def check_font_tags(path: Path) -> None:
    """ISO 32000-1 §9.6.4: different subsets have different tags (a RIP that deduplicates
    fonts by name would otherwise print missing glyphs)."""
    shared = {tag: n for tag, n in font_programs(path).items() if len(n) > 1}
    assert not shared, f"{path.name}: one subset tag for several font programs: {shared}"


def letter_text(directory: Path, entry: dict[str, Any]) -> str:
    """The text of one letter of a manifest, as pypdf extracts it from its pages."""
    reader = pypdf.PdfReader(directory / entry["file"])
    first = entry["first_page"] - 1
    return "\n".join(
        page.extract_text() for page in reader.pages[first : first + entry["page_count"]]
    )


def printed_code(text: str) -> str:
    """The code as the member reads it (it is letter-spaced, so extraction adds blanks)."""
    [code] = {match.replace(" ", "") for match in CODE_IN_TEXT.findall(text)} or [None]
    assert code, "no code box in the letter"
    return code


def codes_in_file(path: Path) -> dict[int, str]:
    """Letter id -> code, for every letter of a PDF (also a discarded `.pdf.part`)."""
    found = {}
    for page in pypdf.PdfReader(path).pages:
        text = page.extract_text()
        reference, code = REFERENCE.search(re.sub(r"\s", "", text)), CODE_IN_TEXT.search(text)
        if reference and code:
            found[int(reference[1])] = code[1].replace(" ", "")
    return found


def printed_codes(summary: dict[str, object]) -> dict[int, str]:
    """Letter id -> code, read back from the PDFs of a batch summary."""
    directory = Path(str(summary["directory"]))
    files = summary["files"]
    assert isinstance(files, list)
    return {k: v for f in files for k, v in codes_in_file(directory / f["name"]).items()}


def code_works(
    session: Session, settings: Settings, clock: Clock, letter_id: int, code: str
) -> bool:
    """Set a PIN on the portal with `code`, as the member holding that letter would."""
    session.expire_all()
    letter = session.get(Letter, letter_id)
    assert letter is not None
    member = session.get(Member, letter.member_id)
    assert member is not None
    return set_pin(session, settings, clock, member.nir, code).ok


def letters_by_status(session: Session) -> dict[str, set[int]]:
    """Status -> ids of the letters in that status."""
    session.expire_all()
    found: dict[str, set[int]] = {}
    for letter in session.exec(select(Letter)):
        found.setdefault(letter.status, set()).add(pk(letter))
    return found


def render_fails(message: str) -> Callable[..., Iterator[object]]:
    """A stand-in for `letters.pool.render_chunks` that fails as rendering can."""

    def explode(*_args: object, **_kwargs: object) -> Iterator[object]:
        raise RuntimeError(message)
        yield  # pragma: no cover

    return explode


def make_letter(
    letter_id: int,
    kind: str,
    *,
    code: str,
    first_name: str = "Jeanne",
    last_name: str = "Dupont",
    civility: str | None = "MME",
    street: str = "12 rue des Lilas",
    postcode: str = "75011",
    city: str = "Paris",
    nir_masked: str = "2 85 •• •• ••• ••• 42",
) -> LetterContent:
    address = postal.make_address(street=street, postcode=postcode, city=city)
    return LetterContent(
        letter_id=letter_id,
        kind=kind,
        recipient_lines=(postal.recipient_line(civility, first_name, last_name), *address.lines()),
        nir_masked=nir_masked,
        code=code,
        code_expires_on=date(2026, 12, 1),
        letter_date=date(2026, 11, 23),
        reference=f"L{letter_id:08d}",
        salutation=salutation_for(civility),
        portal_url="https://adherent.cpms.fr",
    )


# Three letters, one of each kind, one with markup in its names that must print as text.
THREE = (
    make_letter(11, "welcome", code="482913", city="Saint-Étienne", postcode="42000"),
    make_letter(
        12,
        "security_code",
        code="730154",
        first_name="<b>x</b>",
        last_name="{{ 7*7 }}",
        civility="M",
        nir_masked="1 85 •• •• ••• ••• 91",
    ),
    make_letter(13, "pin_reset", code="196847", civility=None, last_name="Martin"),
)
