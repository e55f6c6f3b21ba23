"""`letters returned`: a letter that came back undeliverable (NPAI) revokes its code, flags
the member's address (shown by `member show` and `account status`, with the fix), and no
letter goes there until an agent updates the address. Every return is audited."""

import csv
import hashlib
import hmac
import json
import os
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from cpms_admin.clock import system_clock
from cpms_admin.french import agent_time
from cpms_admin.members.postal import delivery_lines
from cpms_admin.models import Letter, Member
from cpms_admin.settings import Settings
from tests.factories import make_member, make_nir, snapshot
from tests.harness import TEST_PEPPER, Cli, FakeClock
from tests.import_helpers import write_csv
from tests.letters_helpers import batch, code_works, printed_codes


def ok(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else {}


@pytest.fixture
def printed(cli: Cli, session: Session, tmp_path: Path) -> dict[str, Any]:
    """Two members without e-mail whose welcome letters were printed: NIR -> letter, code."""
    nirs = [make_member(session, nir=make_nir(), email=None).nir for _ in range(2)]
    summary = batch(cli, tmp_path / "print")
    codes = printed_codes(summary)
    by_nir = {}
    for entry in summary["letters"]:
        nir = next(
            n
            for n in nirs
            if entry["nir_masked"].endswith(n[13:]) and n[0] == entry["nir_masked"][0]
        )
        by_nir[nir] = {"letter_id": entry["letter_id"], "code": codes[entry["letter_id"]]}
    assert len(by_nir) == 2
    return by_nir


def test_a_returned_letter_revokes_its_code_and_flags_the_address(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    reference = f"L{back['letter_id']:08d}"
    result = ok(cli("--json", "letters", "returned", reference))
    assert result == {
        "returned": [back["letter_id"]],
        "already_returned": [],
        "codes_revoked": 1,
        "members_flagged": 1,
        "address_changed_since": [],
        "letters_voided": [],
    }
    assert not code_works(session, settings, clock, back["letter_id"], back["code"])
    [listed] = ok(cli("--json", "letters", "list", "--status", "returned"))
    assert listed["id"] == back["letter_id"] and "NPAI" in listed["status_reason"]

    shown = ok(cli("--json", "member", "show", nir))["address"]["undeliverable"]
    assert f"letter #{back['letter_id']} came back" in shown["reason"]
    assert f"member update {nir}" in shown["fix"]
    human = cli("member", "show", nir).stdout
    assert "UNDELIVERABLE" in human and "member update" in human
    status = ok(cli("--json", "account", "status", nir))
    assert status["address_undeliverable"] == shown
    assert any(
        line.startswith("Address undeliverable since ") and " CET: letter #" in line
        for line in status["diagnosis"]
    )
    assert status["fix"] == shown["fix"]  # no e-mail: the address is what to fix first
    assert any(  # what the member calls about: the code of the letter they never got
        line.endswith("no longer works: it was revoked: its letter came back undelivered.")
        for line in status["diagnosis"]
    ), status["diagnosis"]

    [event] = ok(cli("--json", "audit", "list", "--nir", nir, "--action", "letter.returned"))
    assert event["reason"] == "NPAI returned by the post"
    assert event["details"]["letter_id"] == back["letter_id"]
    assert event["details"]["address_flagged"] is True


def test_no_letter_goes_to_a_flagged_address_until_an_agent_updates_it(
    cli: Cli, session: Session, tmp_path: Path, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    ok(cli("letters", "returned", str(back["letter_id"])))
    before = snapshot(session)
    refused = cli("code", "issue", nir, "--channel", "post", "--reason", "phone")
    assert refused.exit_code == 1
    assert "undeliverable" in refused.stderr and f"member update {nir}" in refused.stderr
    assert f"add an e-mail address (cpms-admin member update {nir} --email" in refused.stderr
    assert cli("pin", "reset", nir, "--channel", "post", "--reason", "phone").exit_code == 1
    asked = ok(cli("--json", "portal", "request-code", nir))
    other = ok(cli("--json", "portal", "request-code", make_nir()))
    assert asked["reason"] == "undeliverable" and asked["message"] == other["message"]
    campaign = ("code", "campaign", "--no-pin", "--channel", "post", "--reason", "relance")
    counts = ok(cli("--json", *campaign))
    assert (counts["undeliverable"], counts["letters"]) == (1, 0)  # the other has a live code
    after = snapshot(session)
    for table in ("letter", "security_code", "account"):
        assert after[table] == before[table], table

    update = ("member", "update", nir, "--street", "3 rue Neuve", "--reason", "new address")
    ok(cli(*update))
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is None
    [event] = ok(cli("--json", "audit", "list", "--nir", nir, "--action", "member.update"))
    assert event["details"]["undeliverable_cleared"] is True
    ok(cli("code", "issue", nir, "--channel", "post", "--reason", "phone"))


def test_a_flagged_member_with_an_e_mail_address_is_pointed_to_it(
    cli: Cli, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    ok(cli("letters", "returned", str(back["letter_id"])))
    ok(cli("member", "update", nir, "--email", "zoe@example.org", "--reason", "by phone"))
    refused = cli("code", "issue", nir, "--channel", "post", "--reason", "phone")
    assert refused.exit_code == 1
    assert refused.stderr.rstrip().endswith("; or send the code by e-mail (--channel email)")
    ok(cli("code", "issue", nir, "--channel", "email", "--reason", "phone"))


def test_an_import_with_a_new_address_lifts_the_flag_and_one_without_keeps_it(
    cli: Cli, tmp_path: Path, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    ok(cli("letters", "returned", str(back["letter_id"])))
    exported = tmp_path / "members.csv"
    ok(cli("members", "export", "--out", str(exported)))
    with exported.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["nir"] == nir]

    def imported(**changes: str) -> None:
        edited = tmp_path / "edited.csv"
        with edited.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerow({**rows[0], **changes})
        counts = ok(cli("--json", "members", "import", str(edited), "--on-conflict", "update"))
        assert counts["updated"] == 1

    imported(email="nouvelle@exemple.fr")  # the address as the post refused it
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is not None
    imported(email="nouvelle@exemple.fr", street="3 rue Neuve")
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is None
    ok(cli("code", "issue", nir, "--channel", "post", "--reason", "phone"))


def test_a_letter_queued_before_the_return_is_cancelled_at_print_time(
    cli: Cli, session: Session, tmp_path: Path, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    ok(cli("code", "issue", nir, "--channel", "post", "--reason", "phone"))  # queued first
    ok(cli("letters", "returned", str(back["letter_id"])))
    summary = batch(cli, tmp_path / "again")
    assert summary["cancelled_by_reason"] == {"undeliverable": 1}
    assert summary["batch_id"] is None


def test_the_member_confirming_the_address_lifts_the_flag(
    cli: Cli, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    ok(cli("letters", "returned", str(back["letter_id"])))
    ok(cli("member", "update", nir, "--address-confirmed", "--reason", "member called"))
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is None


def test_an_address_typed_again_as_it_was_keeps_the_flag_and_says_so(
    cli: Cli, printed: dict[str, Any]
) -> None:
    """The agent retypes the address the letter came back from: it stays flagged (no letter
    goes there), and the agent is told, with what lifts it."""
    nir, back = next(iter(printed.items()))
    ok(cli("letters", "returned", str(back["letter_id"])))
    street = ok(cli("--json", "member", "show", nir))["address"]["street"]
    again = cli("member", "update", nir, "--street", street.upper(), "--reason", "called")
    assert again.exit_code == 0, again.output
    assert "Note: the address is still the one a letter came back from: " in again.stderr
    assert "(--address-confirmed)" in again.stderr
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is not None


def test_a_letter_printed_before_the_address_changed_does_not_flag_the_new_one(
    cli: Cli, clock: FakeClock, printed: dict[str, Any]
) -> None:
    nir, back = next(iter(printed.items()))
    clock.advance(days=1)
    moved = cli("member", "update", nir, "--street", "3 rue Neuve", "--reason", "moved")
    assert moved.exit_code == 0, moved.stderr
    # Its code was voided by the move already (the letter went to the old address).
    assert f"letter #{back['letter_id']} was on its way to the old address" in moved.stderr
    result = ok(cli("--json", "letters", "returned", str(back["letter_id"])))
    assert (result["codes_revoked"], result["members_flagged"]) == (0, 0)
    assert result["address_changed_since"] == [back["letter_id"]]
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is None


def test_a_member_who_moved_and_came_back_has_the_address_flagged_by_a_letter_sent_there(
    cli: Cli, clock: FakeClock, printed: dict[str, Any]
) -> None:
    """The letter bore the address the member has again (a typo made, then put right): the
    post has shown that address undeliverable, whatever happened in between."""
    nir, back = next(iter(printed.items()))
    street = ok(cli("--json", "member", "show", nir))["address"]["street"]
    clock.advance(days=1)
    ok(cli("member", "update", nir, "--street", "3 rue Neuve", "--reason", "typo"))
    clock.advance(days=1)
    ok(cli("member", "update", nir, "--street", street, "--reason", "typo put right"))
    result = ok(cli("--json", "letters", "returned", str(back["letter_id"])))
    assert (result["members_flagged"], result["address_changed_since"]) == (1, [])
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is not None


def test_a_letter_of_a_pseudonymised_member_comes_back_without_writing_about_them(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, printed: dict[str, Any]
) -> None:
    """Their letter is recorded as returned, but nothing about them is written again: no
    flag, no reason from the print house on their row, their letter or the audit; and the
    reason a letter came back with before is gone with the rest of their data."""
    (nir, back), (other_nir, earlier) = list(printed.items())[:2]
    why = "Décédé, écrire à Mme Yolanda Wxyz, 4 rue Crébillon, Nantes"  # the print house's
    returns = tmp_path / "retours.csv"
    returns.write_text(f"letter_id;motif\n{earlier['letter_id']};{why}\n")
    ok(cli("letters", "returned", "--from-file", str(returns)))
    for closing in (nir, other_nir):
        ok(cli("member", "close", closing, "--reason", "left"))
    clock.advance(days=731)
    assert cli("purge").exit_code == 0
    session.rollback()  # a fresh snapshot, with what the commands did
    assert session.get_one(Letter, earlier["letter_id"]).status_reason is None
    returns.write_text(f"letter_id;motif\n{back['letter_id']};{why}\n")
    result = ok(cli("--json", "letters", "returned", "--from-file", str(returns)))
    assert (result["returned"], result["members_flagged"]) == ([back["letter_id"]], 0)
    session.rollback()  # a fresh snapshot, with what the commands did
    letter = session.get_one(Letter, back["letter_id"])
    assert letter.status_reason == f"returned undeliverable on {agent_time(clock.now)}"
    row = session.get_one(Member, letter.member_id)
    assert (row.undeliverable_at, row.undeliverable_reason) == (None, None)
    [event] = json.loads(cli("--json", "audit", "list", "--action", "letter.returned").stdout)[:1]
    assert event["details"]["returned_as"] is None and "Yolanda" not in json.dumps(event)


def test_a_printed_letter_keeps_its_address_only_as_a_keyed_digest(
    session: Session, printed: dict[str, Any]
) -> None:
    """Two letters to members at the same address keep different values, and neither holds
    a word of the address: it is personal data, and only the pepper can compare it."""
    kept = [session.get_one(Letter, back["letter_id"]).address_digest for back in printed.values()]
    assert all(re.fullmatch(r"[0-9a-f]{16}\$[0-9a-f]{64}", value or "") for value in kept), kept
    assert kept[0] != kept[1]


def test_a_letter_whose_pepper_has_gone_is_judged_by_dates(
    cli: Cli, session: Session, clock: FakeClock, printed: dict[str, Any]
) -> None:
    """Its digest cannot be compared (the pepper that made it left the pepper file): the
    dates judge, and the member has moved since it was printed (then came back), so the
    return does not flag the address, as before the digests."""
    nir, back = next(iter(printed.items()))
    street = ok(cli("--json", "member", "show", nir))["address"]["street"]
    clock.advance(days=1)
    ok(cli("member", "update", nir, "--street", "3 rue Neuve", "--reason", "typo"))
    ok(cli("member", "update", nir, "--street", street, "--reason", "typo put right"))
    letter = session.get_one(Letter, back["letter_id"])
    letter.address_digest = f"k9${letter.address_digest}"
    session.add(letter)
    session.commit()
    result = ok(cli("--json", "letters", "returned", str(back["letter_id"])))
    assert (result["members_flagged"], result["address_changed_since"]) == (
        0,
        [back["letter_id"]],
    )


def test_a_letter_printed_before_digests_of_destinations_still_knows_its_address(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    """Letters printed before 3 December keep a digest of the lines as printed, not of where
    they go: a member who moved and came back since is still known to be at the address the
    letter bore, so its return flags it (it used to be judged by the dates alone)."""
    member = make_member(session, nir=make_nir(), email=None, street="12 boulevard Saint-Michel")
    [entry] = batch(cli, tmp_path / "print")["letters"]
    letter = session.get_one(Letter, entry["letter_id"])
    nonce = (letter.address_digest or "").split("$")[0]
    # The stored form of those digests: HMAC-SHA256 under a key derived from the pepper.
    key = hmac.new(TEST_PEPPER.encode(), b"cpms-address-v1", hashlib.sha256).digest()
    printed_lines = "\n".join([nonce, *delivery_lines(member)]).encode()
    letter.address_digest = f"{nonce}${hmac.new(key, printed_lines, hashlib.sha256).hexdigest()}"
    session.add(letter)
    session.commit()
    clock.advance(days=1)
    ok(cli("member", "update", member.nir, "--street", "3 rue Neuve", "--reason", "typo"))
    ok(
        cli(
            "member",
            "update",
            member.nir,
            "--street",
            "12 boulevard Saint-Michel",
            "--reason",
            "back",
        )
    )
    result = ok(cli("--json", "letters", "returned", str(entry["letter_id"])))
    assert (result["members_flagged"], result["address_changed_since"]) == (1, [])


def test_a_digest_that_does_not_match_an_address_never_changed_still_flags_it(
    cli: Cli, session: Session, printed: dict[str, Any]
) -> None:
    """The lines of an unchanged address can print otherwise one day (a commune renamed in
    the postcode base): only a match is proof, and the dates say the member never moved."""
    back = next(iter(printed.values()))
    letter = session.get_one(Letter, back["letter_id"])
    nonce, digest = (letter.address_digest or "").split("$")
    letter.address_digest = f"{nonce}${'0' * len(digest)}"
    session.add(letter)
    session.commit()
    result = ok(cli("--json", "letters", "returned", str(back["letter_id"])))
    assert (result["members_flagged"], result["address_changed_since"]) == (1, [])


def test_a_name_corrected_since_printing_does_not_stop_a_return_flagging_the_address(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path, printed: dict[str, Any]
) -> None:
    """Only the address lines count: after the name is written in capitals (the envelope is
    the same), a letter coming back still flags the address, and the member's other letter
    in the post, to that same address, stops working."""
    nir, back = next(iter(printed.items()))
    ok(cli("code", "issue", nir, "--channel", "post", "--reason", "phone"))
    printing = batch(cli, tmp_path / "print")
    [other] = printing["letters"]
    code = printed_codes(printing)[other["letter_id"]]
    ok(cli("member", "update", nir, "--last-name", "MARTIN", "--reason", "capitals"))
    result = ok(cli("--json", "letters", "returned", str(back["letter_id"])))
    assert (result["members_flagged"], result["address_changed_since"]) == (1, [])
    assert result["letters_voided"] == [other["letter_id"]]
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is not None
    [void] = ok(cli("--json", "audit", "list", "--action", "letter.void"))
    assert void["details"] == {"letter_id": other["letter_id"], "queued_again": None}
    assert not code_works(session, settings, system_clock, other["letter_id"], code)


def test_an_address_respelt_is_no_move(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """The letter printed `12 BD DE LA REPUBLIQUE`; since, an agent wrote the street out in
    full and an import wrote it abbreviated again. The same door each time: the letter on
    its way still works, its return flags the address, and neither respelling lifts the
    flag (writing the address otherwise does not make it deliverable)."""
    nir = make_member(session, nir=make_nir(), email=None, street="12 bd de la République").nir
    summary = batch(cli, tmp_path / "print")
    [letter_id] = [entry["letter_id"] for entry in summary["letters"]]
    code = printed_codes(summary)[letter_id]
    clock.advance(days=1)
    respelt = cli("member", "update", nir, "--street", "12, boulevard de la Republique")
    assert (respelt.exit_code, respelt.stderr) == (0, "")
    assert code_works(session, settings, clock, letter_id, code)
    result = ok(cli("--json", "letters", "returned", str(letter_id)))
    assert (result["members_flagged"], result["address_changed_since"]) == (1, [])
    ok(cli("member", "update", nir, "--street", "12 Boulevard de la République"))
    assert ok(cli("--json", "member", "show", nir))["address"]["undeliverable"] is not None
    exported = tmp_path / "members.csv"
    ok(cli("members", "export", "--out", str(exported)))
    with exported.open(encoding="utf-8", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    write_csv(exported, [{**row, "street": "12 BD DE LA REPUBLIQUE"}], columns=tuple(row))
    dry = ok(cli("--json", "members", "import", str(exported), "--on-conflict", "update",
                 "--dry-run"))  # fmt: skip
    assert dry["updated"] == 1
    ok(cli("members", "import", str(exported), "--on-conflict", "update"))
    shown = ok(cli("--json", "member", "show", nir))["address"]
    assert (shown["street"], shown["undeliverable"] is not None) == ("12 BD DE LA REPUBLIQUE", True)


def test_a_move_long_after_a_letter_s_code_expired_voids_nothing(
    cli: Cli, clock: FakeClock, printed: dict[str, Any]
) -> None:
    nir = next(iter(printed))
    clock.advance(days=400)
    moved = cli("member", "update", nir, "--street", "3 rue Neuve", "--reason", "moved")
    assert (moved.exit_code, moved.stderr) == (0, "")
    assert ok(cli("--json", "letters", "list", "--status", "pending")) == []


def test_an_import_that_moves_a_member_voids_the_letter_on_its_way(
    cli: Cli,
    session: Session,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    printed: dict[str, Any],
) -> None:
    """`members import --on-conflict update` with a new street for one member: the letter on
    its way to the old one stops working and is queued again; the other member's, whose row
    is unchanged, still works. A dry run first says as much."""
    moving, staying = list(printed)
    # Queued an hour before the batch printed it, as in life: its own code is newer than it.
    letter = session.get_one(Letter, printed[moving]["letter_id"])
    letter.created_at = clock.now - timedelta(hours=1)
    session.add(letter)
    session.commit()
    exported = tmp_path / "members.csv"
    ok(cli("members", "export", "--out", str(exported)))
    with exported.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["nir"] == moving:
            row["street"] = "9 rue Neuve"
    with exported.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dry = ok(cli("--json", "members", "import", str(exported), "--on-conflict", "update",
                 "--dry-run"))  # fmt: skip
    assert (dry["updated"], dry["letters_voided"], dry["letters_queued_again"]) == (1, 1, 1)
    told = cli("members", "import", str(exported), "--on-conflict", "update", "--dry-run")
    assert "1 letter on its way to an address its member leaves would stop working" in told.stdout
    assert told.stderr == ""  # nothing happened: no note that a code no longer works
    imported = cli("--json", "members", "import", str(exported), "--on-conflict", "update")
    assert (ok(imported)["letters_voided"], ok(imported)["letters_queued_again"]) == (1, 1)
    assert (
        "Note: 1 letter was on its way to an address the member has left: its code no"
        in imported.stderr
    )
    moved, kept = printed[moving], printed[staying]
    assert not code_works(session, settings, system_clock, moved["letter_id"], moved["code"])
    assert code_works(session, settings, system_clock, kept["letter_id"], kept["code"])
    [again] = ok(cli("--json", "letters", "list", "--status", "pending"))
    assert again["kind"] == "welcome"
    [void] = ok(cli("--json", "audit", "list", "--action", "letter.void"))
    assert void["details"] == {"letter_id": moved["letter_id"], "queued_again": again["id"]}


def test_the_print_house_file_records_every_return_once(
    cli: Cli, session: Session, tmp_path: Path, printed: dict[str, Any]
) -> None:
    ids = [back["letter_id"] for back in printed.values()]
    returns = tmp_path / "retours.csv"
    rows = ["reference;motif", f"L{ids[0]:08d};Destinataire inconnu à l'adresse", f"{ids[1]};NPAI"]
    returns.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252"))
    result = ok(cli("--json", "letters", "returned", "--from-file", str(returns)))
    assert (sorted(result["returned"]), result["members_flagged"]) == (sorted(ids), 2)
    session.rollback()  # a fresh snapshot, with what the commands did
    letter = session.get(Letter, ids[0])
    assert letter is not None and "Destinataire inconnu" in (letter.status_reason or "")
    again = ok(cli("--json", "letters", "returned", "--from-file", str(returns)))
    assert (again["returned"], sorted(again["already_returned"])) == ([], sorted(ids))
    mac = tmp_path / "mac.csv"  # "CSV (Macintosh)": lines end with a lone CR
    mac.write_bytes(("\r".join(rows) + "\r").encode("cp1252"))
    read = ok(cli("--json", "letters", "returned", "--from-file", str(mac)))
    assert sorted(read["already_returned"]) == sorted(ids)
    # Excel's "CSV UTF-8" (a BOM) with a Windows-1252 row pasted in: read as Windows-1252.
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(rows) + "\r\n").encode("cp1252"))
    read = ok(cli("--json", "letters", "returned", "--from-file", str(mixed)))
    assert sorted(read["already_returned"]) == sorted(ids)


def test_a_letter_listed_twice_with_npai_however_written_is_one_return(
    cli: Cli, tmp_path: Path, printed: dict[str, Any]
) -> None:
    """`NPAI`, `npai`, written out in any case, and no reason at all say the same, and a
    reference is one in either case: the letter is recorded once."""
    first = next(iter(printed.values()))["letter_id"]
    returns = tmp_path / "retours.csv"
    rows = [
        "Référence;Motif",  # a French spreadsheet's header
        f"L{first:08d};NPAI",
        f"{first};",
        f"#{first};npai",
        f"l{first:08d};npai (n'habite pas à l'adresse indiquée)",  # typed in lower case
    ]
    returns.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = ok(cli("--json", "letters", "returned", "--from-file", str(returns)))
    assert (result["returned"], result["members_flagged"]) == ([first], 1)


def test_a_returns_file_in_an_encoding_not_found_is_read_as_told(
    cli: Cli, tmp_path: Path, printed: dict[str, Any]
) -> None:
    """Excel's "Unicode text" (UTF-16) is found by its BOM; a byte neither UTF-8 nor
    Windows-1252 refuses the file with its line, and `--encoding` reads it."""
    first, second = (back["letter_id"] for back in printed.values())
    unicode_text = tmp_path / "unicode.csv"
    unicode_text.write_text(f"letter_id;motif\n{first};Refusé\n", encoding="utf-16")
    assert ok(cli("--json", "letters", "returned", "--from-file", str(unicode_text)))[
        "returned"
    ] == [first]
    mac = tmp_path / "mac.csv"  # an old Mac's encoding: è is a byte Windows-1252 lacks
    mac.write_bytes(
        f"letter_id;motif\n{second};Parti sans laisser d'adresse è\n".encode("mac_roman")
    )
    refused = cli("letters", "returned", "--from-file", str(mac))
    assert refused.exit_code == 2
    assert "line 2 is not valid" in refused.stderr
    read = ok(
        cli("--json", "letters", "returned", "--from-file", str(mac), "--encoding", "mac_roman")
    )
    assert read["returned"] == [second]


def test_excel_unicode_text_and_a_given_utf16_are_read(
    cli: Cli, tmp_path: Path, printed: dict[str, Any]
) -> None:
    """Excel's "Unicode text" is UTF-16 with tabs; `--encoding utf-16-le`, read off an
    editor's status bar, reads a file that starts with its byte order mark. Both found by
    an outside helper."""
    first, second = (back["letter_id"] for back in printed.values())
    tabs = tmp_path / "retours.txt"
    tabs.write_text(f"letter_id\tmotif\r\n{first}\tRefusé\r\n", encoding="utf-16")
    assert ok(cli("--json", "letters", "returned", "--from-file", str(tabs)))["returned"] == [first]
    marked = tmp_path / "retours.csv"
    marked.write_bytes(f"letter_id;motif\r\n{second};NPAI\r\n".encode("utf-16"))
    given = cli(
        "--json", "letters", "returned", "--from-file", str(marked), "--encoding", "utf-16-le"
    )
    assert ok(given)["returned"] == [second]


@pytest.mark.parametrize("encoding", ["rot13", "base64", "undefined", "punycode", "no-such-codec"])
def test_an_encoding_that_is_no_text_encoding_is_refused(
    cli: Cli, tmp_path: Path, encoding: str
) -> None:
    """Python knows rot13 and base64, but they do not decode text, and punycode fails on
    such a file with an error of its own: exit 2 with one line, as for an unknown name, for
    `letters returned` as for `members import`."""
    path = tmp_path / "retours.csv"
    path.write_text("letter_id;motif\n1;NPAI\n", encoding="utf-8")
    for command in (
        ("letters", "returned", "--from-file", str(path)),
        ("members", "import", str(path)),
    ):
        result = cli(*command, "--encoding", encoding)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and "encoding" in result.stderr


def test_a_returns_file_bigger_than_any_night_is_refused_unread(cli: Cli, tmp_path: Path) -> None:
    """A night's returns are a few kilobytes: past 16 MiB the file is refused (exit 2)
    rather than held in memory whole."""
    path = tmp_path / "retours.csv"
    with path.open("w") as out:
        out.write("letter_id\n")
        out.write("1\n" * (8 << 20))
    result = cli("letters", "returned", "--from-file", str(path))
    assert result.exit_code == 2
    assert "no night's returns are: not a returns file" in result.stderr


def test_a_returns_file_from_a_pipe_is_read(
    cli: Cli, tmp_path: Path, printed: dict[str, Any]
) -> None:
    """`--from-file <(iconv -f MAC retours.csv)`: a pipe can be read only once, and is."""
    first = next(iter(printed.values()))["letter_id"]
    fifo = tmp_path / "retours.fifo"
    os.mkfifo(fifo)
    # Opening a FIFO to write waits for its reader: the command.
    writer = threading.Thread(target=fifo.write_text, args=(f"letter_id\n{first}\n",))
    writer.start()
    result = cli("--json", "letters", "returned", "--from-file", str(fifo))
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer end if unread
    writer.join()
    assert ok(result)["returned"] == [first]


@pytest.mark.parametrize(
    ("rows", "code", "message"),
    [
        (["reference", "L00000001", "not a letter"], 2, "line 3"),
        (["nir", "1"], 2, "no letter_id or reference column"),
        (["letter_id", "1", "999999"], 3, "no letter #999999 (line 3); nothing recorded"),
        (["letter_id,reason", "1," + "x" * 200_000], 2, "line 2: line longer than 65,536"),
        (
            ["letter_id;reference", "1;L00000001", "1;L00000002"],
            2,
            "line 3: letter_id names #1 and reference names #2; which letter came back?",
        ),
        (
            ["reference;motif", "L00000001;NPAI", "1;NPAI", "L00000001;Refusé"],
            2,
            "line 4: letter #1 is on line 2 too, with another reason; which one is right?",
        ),
        (  # the file's own lines, blank ones and a reason over two lines counted
            ["reference;motif", "", 'L00000001;"NPAI', 'au 2e"', "", "L00000001;Refusé"],
            2,
            "line 6: letter #1 is on line 3 too, with another reason; which one is right?",
        ),
        (["reference", "", "L00000001", "", "not a letter"], 2, "line 5"),
        (["reference;motif", "L00000001;NPAI", ";NPAI"], 2, "line 3: no letter id or reference"),
        (["reference;motif", "", "L00000001;" + "x" * 201], 2, "line 3: the reason must be one"),
        # A column twice, or two reasons: which value is meant? (one used to be dropped)
        (["letter_id,letter_id", "1,2"], 2, "repeated columns: letter_id; keep one of each"),
        (["Référence;reference", "L00000001;L00000002"], 2, "repeated columns: reference"),
        (["letter_id,reason,reason", "1,NPAI,Décédé"], 2, "repeated columns: reason"),
        (["letter_id,reason,Motif", "1,NPAI,Décédé"], 2, "two reason columns, reason and motif"),
    ],
)
def test_a_bad_returns_file_changes_nothing(
    cli: Cli,
    session: Session,
    tmp_path: Path,
    printed: dict[str, Any],
    rows: list[str],
    code: int,
    message: str,
) -> None:
    returns = tmp_path / "retours.csv"
    returns.write_text("\n".join(rows) + "\n")
    before = snapshot(session)
    result = cli("letters", "returned", "--from-file", str(returns))
    assert (result.exit_code, message in result.stderr) == (code, True), result.output
    assert snapshot(session) == before


def test_only_a_printed_letter_can_come_back(cli: Cli, session: Session) -> None:
    make_member(session, nir=make_nir(), email=None)
    [pending] = session.exec(select(Letter)).all()
    result = cli("letters", "returned", str(pending.id))
    assert result.exit_code == 1
    assert f"only a printed letter can come back: #{pending.id}: pending;" in result.stderr
    assert cli("letters", "returned").exit_code == 2
