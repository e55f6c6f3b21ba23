"""What a print house checks before printing a batch: a structurally valid PDF (qpdf), font
subsets each with a name of their own, and the order form in the manifest."""

import subprocess
from pathlib import Path

import pytest
from sqlmodel import Session

from cpms_admin.letters.pdf.render import LetterRenderer
from tests.harness import Cli
from tests.letters_helpers import (
    THREE,
    batch,
    check_batch_dir,
    font_programs,
    letter_text,
    manifests,
    queue_members,
)


def qpdf_check(path: Path) -> str:
    done = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_font_subset_has_a_tag_of_its_own(tmp_path: Path) -> None:
    """Each kind's page and the overlay each bring their own subset of the same fonts: one
    tag per distinct program, the same tag for the same program."""
    out = tmp_path / "three.pdf"
    LetterRenderer().render(THREE, out)
    programs = font_programs(out)
    assert all(len(digests) == 1 for digests in programs.values()), programs
    # Several Liberation Sans subsets live in this file (one per kind and the overlay's).
    assert len(programs) >= 4
    assert "No syntax or stream encoding errors" in qpdf_check(out)


def test_a_batch_of_every_kind_passes_qpdf_and_keeps_tags_apart(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    members = queue_members(session, 5)
    for command in (("pin", "reset"), ("code", "issue")):
        result = cli(*command, members.pop().nir, "--channel", "post", "--reason", "by phone")
        assert result.exit_code == 0, result.output
    out = tmp_path / "print"
    batch(cli, out, "--chunk-size", "4")
    [(directory, manifest)] = manifests(out)
    check_batch_dir(directory, manifest)  # fonts included
    for entry in manifest["files"]:
        qpdf_check(directory / entry["name"])


@pytest.mark.parametrize("duplex", [False, True])
def test_the_manifest_is_the_print_house_order_form(
    cli: Cli, session: Session, tmp_path: Path, duplex: bool
) -> None:
    queue_members(session, 3)
    out = tmp_path / "print"
    options = ("--duplex",) if duplex else ()
    ordered = cli.with_settings(
        letter_sender_reference="CPMS-0042", letter_return_address="CPMS|BP 42|69003 LYON"
    )
    summary = batch(ordered, out, *options)
    assert "69003 LYON" in letter_text(*_first_letter(out))
    [(directory, manifest)] = manifests(out)
    check_batch_dir(directory, manifest)
    keys = ("sender_reference", "return_address", "page_size", "duplex")
    order = {key: manifest[key] for key in keys}
    assert order == {
        "sender_reference": "CPMS-0042",
        "return_address": ["CPMS", "BP 42", "69003 LYON"],  # for a back flap
        "page_size": "A4",
        "duplex": duplex,
    }
    assert {key: summary[key] for key in order} == order
    assert all(le["page_count"] == (2 if duplex else 1) for le in manifest["letters"])


def _first_letter(out: Path) -> tuple[Path, dict[str, object]]:
    [(directory, manifest)] = manifests(out)
    return directory, manifest["letters"][0]


def test_nothing_printed_orders_nothing(cli: Cli, tmp_path: Path) -> None:
    summary = batch(cli, tmp_path / "print")
    assert (summary["batch_id"], summary["page_size"], summary["duplex"]) == (None, None, None)
