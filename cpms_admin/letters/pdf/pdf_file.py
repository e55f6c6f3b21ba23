"""Assembling a letters file for the print house (pikepdf): each kind's page stored once, and
every font subset named after its own content.

WeasyPrint names a font subset after the font's description (`VRMYHF+Liberation-Sans`), not
after the glyphs it keeps, so the subsets of the overlay and of each kind's page, all merged
into one file, would share one name with different programs. ISO 32000-1 §9.6.4 asks for a
different tag per subset, and a RIP that deduplicates fonts by name prints missing glyphs.
So each subset's tag is made from a hash of its font program: equal tags, equal programs.
"""

import contextlib
import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

import pikepdf

SUBSET_NAME = re.compile(r"^/[A-Z]{6}\+(.+)$")
FONT_FILES = ("/FontFile2", "/FontFile3", "/FontFile")


def print_over(overlay_pdf: bytes, under: Sequence[bytes | None], out_path: Path) -> None:
    """Write `overlay_pdf` to `out_path`, its page i printed over the one-page PDF `under[i]`.

    Each distinct page of `under` goes into the file once, as a form XObject drawn by each of
    the pages it is under.
    """
    with contextlib.ExitStack() as stack:
        pdf = stack.enter_context(pikepdf.open(io.BytesIO(overlay_pdf)))
        forms: dict[int, pikepdf.Object] = {}
        for page, backdrop in zip(pdf.pages, under, strict=True):
            if backdrop is None:
                continue
            if id(backdrop) not in forms:
                # The source stays open until the save: pikepdf copies stream data lazily.
                source = stack.enter_context(pikepdf.open(io.BytesIO(backdrop)))
                forms[id(backdrop)] = pdf.copy_foreign(source.pages[0].as_form_xobject())
            page.add_underlay(forms[id(backdrop)], pikepdf.Rectangle(page.mediabox))
        retag_fonts(pdf)
        with out_path.open("wb") as out:  # truncating keeps the mode of a reserved file
            pdf.save(out)


PAGE_SIZES = {(210, 297): "A4", (148, 210): "A5", (216, 279): "Letter"}
MM_PER_PT = 25.4 / 72


def page_sizes(path: Path) -> set[str]:
    """The sizes of the pages of a PDF file, by name ("A4") or in millimetres ("200x300mm")."""
    with pikepdf.open(path) as pdf:
        boxes = {tuple(float(v) for v in page.mediabox) for page in pdf.pages}
    sizes = set()
    for x0, y0, x1, y1 in boxes:
        mm = (round((x1 - x0) * MM_PER_PT), round((y1 - y0) * MM_PER_PT))
        sizes.add(PAGE_SIZES.get(mm, f"{mm[0]}x{mm[1]}mm"))
    return sizes


def subset_tag(program: bytes, salt: int = 0) -> str:
    """Six capital letters made from a font program, as a subset tag."""
    digest = hashlib.sha256(salt.to_bytes(4, "big") + program).digest()
    return "".join(chr(65 + byte % 26) for byte in digest[:6])


def retag_fonts(pdf: pikepdf.Pdf) -> None:
    """Rename every subset font of `pdf` after its program: the Type0 font, its CIDFont and
    their descriptor (or a simple font and its descriptor) all take the program's tag."""
    tags: dict[bytes, str] = {}  # program's digest -> tag
    for font in [obj for obj in pdf.objects if _is(obj, "/Font")]:
        named = [font]
        descriptor = font.get("/FontDescriptor")
        if descriptor is None and "/DescendantFonts" in font:
            descendant = font.DescendantFonts[0]
            named.append(descendant)
            descriptor = descendant.get("/FontDescriptor")
        if descriptor is None:  # a Type3 or a standard font: no program, no tag
            continue
        stream = next((descriptor[k] for k in FONT_FILES if k in descriptor), None)
        if stream is None:
            continue
        program = stream.read_bytes()
        digest = hashlib.sha256(program).digest()
        if digest not in tags:
            salt, tag = 0, subset_tag(program)
            while tag in tags.values():  # two programs, one tag: take another
                salt += 1
                tag = subset_tag(program, salt)
            tags[digest] = tag
        for obj in named:
            _rename(obj, "/BaseFont", tags[digest])
        _rename(descriptor, "/FontName", tags[digest])


def _is(obj: object, kind: str) -> bool:
    return isinstance(obj, pikepdf.Dictionary) and obj.get("/Type") == kind


def _rename(obj: pikepdf.Object, key: str, tag: str) -> None:
    name = obj.get(key)
    if name is not None and (match := SUBSET_NAME.match(str(name))):
        obj[key] = pikepdf.Name(f"/{tag}+{match[1]}")
