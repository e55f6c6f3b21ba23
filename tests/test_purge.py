"""`purge`: each category drops exactly what is past its period and nothing younger, the dry
run changes nothing, every run is audited, links are never followed, and a run killed
half-way is finished by the next one. With fixed clocks, on every engine."""

import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from cpms_admin.audit_chain import archive_events_into
from cpms_admin.db import PURGE_RUN, one_run, sqlite_path
from cpms_admin.errors import NotReady
from cpms_admin.models import (
    Account,
    AuditEvent,
    CodeRequest,
    Letter,
    LetterBatch,
    Member,
    UnknownLogin,
)
from cpms_admin.privacy import pseudonymise, purge_batches
from cpms_admin.settings import load_settings
from tests.audit_helpers import audit_of
from tests.factories import snapshot
from tests.file_helpers import NOBODY
from tests.harness import Cli, FakeClock
from tests.retention_helpers import (
    DAY,
    add_member,
    build_world,
    by_name,
    close,
    old_events,
    purge,
    tree,
    write_eml,
)

CATEGORIES = [
    "unknown_nir_counters",
    "code_requests",
    "mail_files",
    "batch_files",
    "closed_members",
    "audit_events",
]


@pytest.fixture
def archived(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The calls `purge` made to the audit chain's archive (which does its work as ever)."""
    calls: list[dict[str, Any]] = []

    def archive(session: Session, *, before: datetime, directory: Path, **rest: Any) -> int:
        calls.append({"before": before, "out": directory})
        return archive_events_into(session, before=before, directory=directory, **rest)

    monkeypatch.setattr("cpms_admin.privacy.retention.archive_events_into", archive)
    return calls


def member_row(session: Session, nir_or_id: str | int) -> Member:
    session.rollback()  # a fresh snapshot, with what the commands did
    where = Member.id == nir_or_id if isinstance(nir_or_id, int) else Member.nir == nir_or_id
    member = session.exec(select(Member).where(where)).one()
    return member


def test_a_dry_run_lists_each_category_and_changes_nothing(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    folders = [world.mail_dir, world.old_batch.parent, world.outside.parent]
    before_db, before_files = snapshot(session), [tree(folder) for folder in folders]
    code, document, stderr = purge(cli, "--dry-run")
    assert code == 0, stderr
    assert snapshot(session) == before_db
    assert [tree(folder) for folder in folders] == before_files
    assert document["dry_run"] is True and document["at"] == "2026-11-23T09:00:00+00:00"
    found = by_name(document)
    assert list(found) == CATEGORIES
    counts = {name: category["count"] for name, category in found.items()}
    old_audit = len(old_events(session, world.now - 365 * DAY))
    assert old_audit == 4  # the two closed members' addition and closing
    assert counts == {
        "unknown_nir_counters": 1,  # 181 days; the one of exactly 180 days stays
        "code_requests": 1,
        "mail_files": 2,  # the old e-mail and the temporary file; not the link
        "batch_files": 2,  # printed 40 days ago, and the one whose code was used
        "closed_members": 1,
        "audit_events": old_audit,
    }
    assert found["closed_members"] == {
        "name": "closed_members",
        "action": "pseudonymise",
        "rule": "closed more than 730 days ago (CPMS_RETENTION_CLOSED_MEMBERS_DAYS)",
        "count": 1,
        "oldest": "2024-11-22T09:00:00+00:00",
        "skipped": [],
        "error": None,
    }
    assert found["unknown_nir_counters"]["oldest"] == "2026-05-26T09:00:00+00:00"
    assert found["batch_files"]["oldest"] == "2026-10-14T09:00:00+00:00"
    assert found["mail_files"]["skipped"] == [f"{world.planted} is a symbolic link: left alone"]
    assert f"Warning: purge mail_files: {world.planted} is a symbolic link" in stderr
    human = cli("purge", "--dry-run")
    assert human.exit_code == 0
    assert human.stdout.splitlines()[0] == (
        "Dry run, nothing was changed. Past their retention period:"
    )
    assert (
        "  1 to pseudonymise closed member, the oldest 2024-11-22 10:00 CET: closed more than "
        "730 days ago (CPMS_RETENTION_CLOSED_MEMBERS_DAYS)." in human.stdout.splitlines()
    )


def test_purge_drops_exactly_what_is_past_each_period(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    kept_events = old_events(session, world.now - 365 * DAY)
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    assert document["dry_run"] is False
    counts = {c["name"]: c["count"] for c in document["categories"]}
    assert counts == {
        "unknown_nir_counters": 1,
        "code_requests": 1,
        "mail_files": 2,
        "batch_files": 2,
        "closed_members": 1,
        "audit_events": 4,
    }
    session.rollback()  # a fresh snapshot, with what the commands did
    assert sorted(row.subject[0] for row in session.exec(select(UnknownLogin))) == ["b", "c"]
    assert [row.subject[0] for row in session.exec(select(CodeRequest))] == ["c"]
    # Files: the old ones gone; the young one, the link, its target and the stranger kept.
    assert sorted(p.name for p in world.mail_dir.iterdir()) == sorted(
        [world.young_mail.name, world.planted.name, "README.txt"]
    )
    assert world.planted.is_symlink() and world.outside.read_text() == "someone else's"
    out = world.old_batch.parent
    assert sorted(p.name for p in out.iterdir()) == [world.young_batch.name]
    manifests = dict(session.exec(select(LetterBatch.id, LetterBatch.manifest)).all())
    assert {batch_id for batch_id, manifest in manifests.items() if manifest} == {2}
    # Members: only the one closed 731 days ago.
    assert member_row(session, world.young_closed).pseudonymised_at is None
    assert member_row(session, world.active).pseudonymised_at is None
    # Audit events: handed to the audit chain with the cut-off, archived to a file, dropped.
    out_dir = Path(cli.settings.audit_archive_dir)
    assert archived == [{"before": world.now - 365 * DAY, "out": out_dir}]
    assert old_events(session, world.now - 365 * DAY) == []
    (archive,) = out_dir.iterdir()
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [e["id"] for e in lines] == [e[0] for e in kept_events]
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.stderr
    assert cli("audit", "verify", "--archive", str(archive)).exit_code == 0
    # One event per category run, each saying what it dropped.
    events = json.loads(cli("--json", "audit", "list", "--since", "2026-11-23").stdout)
    runs = {e["action"]: e for e in events if e["action"].startswith("purge.")}
    assert set(runs) == {f"purge.{name}" for name in CATEGORIES} | {"purge.closed_members.member"}
    assert runs["purge.batch_files"]["details"]["batch_ids"] == [1, 3]
    assert runs["purge.mail_files"]["details"]["count"] == 2
    assert runs["purge.unknown_nir_counters"]["details"] == {
        "rule": "no failed attempt for 180 days (CPMS_RETENTION_UNKNOWN_NIR_DAYS)",
        "before": "2026-05-27T09:00:00+00:00",
        "count": 1,
        "oldest": "2026-05-26T09:00:00+00:00",
        "skipped": [],
    }
    # Run again: nothing left to drop.
    again = by_name(purge(cli)[1])
    assert {
        name: c["count"] for name, c in again.items() if name != "audit_events"
    } == dict.fromkeys(CATEGORIES[:-1], 0)


def test_a_run_with_nothing_to_drop_prints_nothing_and_is_audited(cli: Cli) -> None:
    result = cli("purge")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    events = json.loads(cli("--json", "audit", "list").stdout)
    assert sorted(e["action"] for e in events) == sorted(f"purge.{name}" for name in CATEGORIES)
    assert {e["details"]["count"] for e in events} == {0}


def test_what_purge_says_it_dropped(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    build_world(cli, session, clock, tmp_path)
    result = cli("purge")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Deleted 1 unknown-NIR counter, the oldest 2026-05-26 11:00 CEST: no failed attempt for "
        "180 days (CPMS_RETENTION_UNKNOWN_NIR_DAYS).",
        "Deleted 1 code request, the oldest 2026-11-22 09:00 CET: older than 24 hours, the "
        "window of the daily limit (CPMS_CODE_REQUESTS_PER_DAY).",
        "Deleted 2 e-mail files, the oldest 2026-11-21 10:00 CET: written more than 1 day ago "
        "(CPMS_RETENTION_MAIL_FILES_DAYS).",
        "Deleted 2 letters batches, the oldest 2026-10-14 11:00 CEST: no live code left in "
        "them, or printed more than 30 days ago (CPMS_RETENTION_BATCH_FILES_DAYS).",
        "Pseudonymised 1 closed member, the oldest 2024-11-22 10:00 CET: closed more than 730 "
        "days ago (CPMS_RETENTION_CLOSED_MEMBERS_DAYS).",
        "Archived 4 audit events, the oldest 2024-11-22 10:00 CET: older than 365 days "
        "(CPMS_RETENTION_AUDIT_DAYS).",
    ]


def test_a_pseudonymised_member_is_no_one_but_their_audit_events_remain(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    cli = cli.with_settings(retention_audit_days=3650)  # their events are kept, not archived
    nir = add_member(cli, "Zébulon", "--email", "zebulon@example.org", "--birth-date", "1985-05-01")
    close(cli, nir)
    member_id = member_row(session, nir).id
    assert member_id is not None
    session.add(Letter(member_id=member_id, kind="welcome", purpose="first_login",
                       status="printed", address_digest="0" * 16 + "$" + "1" * 64))  # fmt: skip
    session.commit()
    story = audit_of(cli, nir)
    assert [e["action"] for e in story] == ["member.add", "member.close"]
    clock.advance(days=731)
    assert purge(cli)[0] == 0
    member = member_row(session, member_id)
    assert member.nir == f"X{member_id:014d}" and member.status == "closed"
    assert (member.last_name, member.first_name, member.email, member.birth_date) == (
        "", "", None, None
    )  # fmt: skip
    assert (member.street, member.postcode, member.city, member.closed_reason) == ("", "", "", None)
    assert member.search_text == "" and member.pseudonymised_at == clock.now
    account = session.get(Account, member_id)
    assert account is not None and account.pin_hash is None
    letters = session.exec(select(Letter).where(Letter.member_id == member_id)).all()
    assert [letter.address_digest for letter in letters if letter.status == "printed"] == [None]
    # Nowhere to be found by what was theirs, in listings or exports.
    for args in (["--search", "Zébulon"], ["--status", "closed"], ["--all"]):
        listed = json.loads(cli("--json", "member", "list", *args).stdout)
        assert [m["nir"] for m in listed] == [], args
    exported = tmp_path / "export.csv"
    assert cli("members", "export", "--out", str(exported)).exit_code == 0
    assert "zebulon" not in exported.read_text().lower() and nir not in exported.read_text()
    shown = cli("member", "show", nir)
    assert shown.exit_code == 3
    # Their audit events: unchanged, still theirs (by id), and the pseudonymisation added.
    session.rollback()  # a fresh snapshot, with what the commands did
    events = session.exec(
        select(AuditEvent).where(AuditEvent.member_id == member_id).order_by(col(AuditEvent.id))
    ).all()
    assert [e.id for e in events[:2]] == [e["id"] for e in story]
    assert [e.action for e in events] == [
        "member.add",
        "member.close",
        "purge.closed_members.member",
    ]
    (run,) = [e for e in events if e.action == "purge.closed_members.member"]
    assert json.loads(run.details)["change"] == "pseudonymised"
    # The audit list shows the stand-in as it is, not grouped as if it were a NIR.
    listed = cli("audit", "list", "--action", "purge.closed_members.member").stdout
    assert f"X{member_id:014d}" in listed and "X 00 00" not in listed


def test_nothing_of_a_pseudonymised_member_stays_in_the_database_files(
    cli: Cli, session: Session, clock: FakeClock, db_url: str
) -> None:
    """Not in any table, a sealed event's details included (a code's delivery named the
    NIR), and on SQLite not in the bytes of the database file or its write-ahead log."""
    cli = cli.with_settings(retention_audit_days=3650)  # their events are kept, not archived
    nir = add_member(cli, "Zanzibarova", "--email", "quirinus@example.org")
    assert cli("code", "issue", nir, "--channel", "email", "--reason", "appel").exit_code == 0
    close(cli, nir)
    kept = add_member(cli, "Dupont")  # someone else's data stays
    clock.advance(days=731)
    session.rollback()
    assert purge(cli)[0] == 0
    theirs = [nir, "zanzibarova", "quirinus"]
    dump = repr(snapshot(session)).lower()
    assert [word for word in theirs if word in dump] == []
    assert kept in dump
    path = sqlite_path(db_url)
    if path is not None:
        files = [path.with_name(path.name + end) for end in ("", "-wal")]
        stored = b"".join(file.read_bytes() for file in files if file.exists()).lower()
        assert [word for word in theirs if word.encode() in stored] == []
        assert b"dupont" in stored


def test_a_run_killed_between_member_batches_is_finished_by_the_next(
    cli: Cli,
    session: Session,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    archived: list[dict[str, Any]],
) -> None:
    nirs = [add_member(cli, name, "--email", f"{name}@example.org") for name in "ABC"]
    for nir in nirs:
        close(cli, nir)
    ids = [member_row(session, nir).id for nir in nirs]
    clock.advance(days=731)
    monkeypatch.setattr(pseudonymise, "BATCH", 2)

    def killed(name: str) -> None:
        if name == "purge.between_member_batches":
            raise KeyboardInterrupt

    monkeypatch.setattr(pseudonymise, "failpoint", killed)
    assert cli("purge").exit_code == 130
    rows = [member_row(session, member_id) for member_id in ids if member_id]
    # The first batch whole, the other member untouched: never half-pseudonymised.
    assert [(m.pseudonymised_at is not None, m.email is None, m.nir[0]) for m in rows] == [
        (True, True, "X"),
        (True, True, "X"),
        (False, False, nirs[2][0]),
    ]

    def runs() -> list[tuple[str, int]]:
        found = json.loads(
            cli("--json", "audit", "list", "--action", "purge.closed_members").stdout
        )
        return [(e["outcome"], e["details"]["count"]) for e in reversed(found)]

    assert runs() == [("started", 3)]  # found 3; no closing event: it never said all went
    monkeypatch.undo()
    _, document, _ = purge(cli)
    assert by_name(document)["closed_members"]["count"] == 1
    assert runs() == [("started", 3), ("started", 1), ("ok", 1)]
    assert all(member_row(session, i).pseudonymised_at for i in ids if i)
    changes = json.loads(
        cli("--json", "audit", "list", "--action", "purge.closed_members.member").stdout
    )
    assert len(changes) == 3


def test_a_batch_that_fails_inside_its_transaction_leaves_its_members_untouched(
    cli: Cli, session: Session, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    nir = add_member(cli, "Intact", "--email", "intact@example.org")
    close(cli, nir)
    clock.advance(days=731)
    before = snapshot(session)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the disk of the audit log is full")

    monkeypatch.setattr("cpms_admin.audit.RunAudit.record_members", broken)
    result = cli("purge")
    assert isinstance(result.exception, RuntimeError)
    after = snapshot(session)
    assert after["member"] == before["member"] and after["account"] == before["account"]


def test_a_chain_that_does_not_verify_is_not_archived_and_the_category_fails(
    cli: Cli, session: Session, clock: FakeClock
) -> None:
    """An old event changed by hand: the archive refuses (exit 1) after the other categories
    did their work, writes no file and keeps every event, so the evidence stays."""
    nir = add_member(cli, "Ancienne")
    close(cli, nir)
    clock.advance(days=731)
    session.rollback()
    first = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).first()
    assert first is not None
    session.execute(
        update(AuditEvent).where(col(AuditEvent.id) == first.id).values(reason="rewritten")
    )
    session.commit()
    kept = old_events(session, clock.now - 365 * DAY)
    code, document, stderr = purge(cli)
    assert code == 1
    found = by_name(document)
    assert found["closed_members"]["count"] == 1 and found["closed_members"]["error"] is None
    assert found["audit_events"]["count"] == 0
    assert f"event #{first.id}" in found["audit_events"]["error"]
    assert stderr.splitlines() == [
        f"Error: purge audit_events failed: {found['audit_events']['error']}"
    ]
    assert old_events(session, clock.now - 365 * DAY) == kept
    archives = Path(cli.settings.audit_archive_dir)
    assert not archives.exists() or list(archives.iterdir()) == []
    (failed,) = json.loads(cli("--json", "audit", "list", "--action", "purge.audit_events").stdout)
    assert failed["outcome"] == "failed" and failed["details"]["count"] == 0


@pytest.mark.parametrize(("database_mode", "folder_mode"), [(0o600, 0o700), (0o660, 0o770)])
def test_the_audit_archive_folder_gets_the_database_files_group_access(
    cli: Cli, clock: FakeClock, database_mode: int, folder_mode: int
) -> None:
    """An admin's manual purge makes the archive folder; the nightly cron, another agent of
    the group, archives there next (README "Agents and rights")."""
    database = sqlite_path(cli.settings.database_url)
    if database is None:
        pytest.skip("the folder follows the SQLite file's mode; PostgreSQL has none")
    database.chmod(database_mode)
    add_member(cli, "Ancienne")
    clock.advance(days=366)
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    assert by_name(document)["audit_events"]["count"] == 1
    archives = Path(cli.settings.audit_archive_dir)
    assert stat.S_IMODE(archives.stat().st_mode) == folder_mode


def test_a_colleague_s_e_mail_in_a_shared_outbox_is_purged_a_stranger_s_is_not(
    cli: Cli, clock: FakeClock
) -> None:
    """Agents of one group share the outbox; the nightly purge, run by another of them, must
    delete their old e-mails too, and still leave alone what belongs to nobody of the group."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another user")
    outbox = Path(cli.settings.mail_dir)
    colleague = write_eml(outbox, clock.now - 2 * DAY)
    stranger = write_eml(outbox, clock.now - 3 * DAY)
    os.chown(colleague, NOBODY, os.getegid())  # a colleague's: our group
    os.chown(stranger, NOBODY, NOBODY)
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    found = by_name(document)["mail_files"]
    assert found["count"] == 1
    assert found["skipped"] == [f"{stranger} is another user's (uid {NOBODY}): left alone"]
    assert sorted(p.name for p in outbox.iterdir()) == [stranger.name]


def test_a_link_planted_where_a_batch_directory_was_is_not_followed(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    target = tmp_path / "theirs"
    target.mkdir()
    (target / "keep.pdf").write_text("theirs")
    os.rename(world.old_batch, tmp_path / "moved-away")
    world.old_batch.symlink_to(target, target_is_directory=True)
    code, document, stderr = purge(cli)
    assert code == 0
    batches = by_name(document)["batch_files"]
    assert batches["count"] == 1  # the used one; the old one waits for someone to look
    assert batches["skipped"] == [f"{world.old_batch} is a symbolic link: left alone"]
    assert world.old_batch.is_symlink() and (target / "keep.pdf").read_text() == "theirs"
    assert f"Warning: purge batch_files: {world.old_batch} is a symbolic link" in stderr


def test_a_mail_directory_that_is_a_link_fails_that_category_only(
    cli: Cli, tmp_path: Path, clock: FakeClock
) -> None:
    real = tmp_path / "real-outbox"
    old = write_eml(real, clock.now - 2 * DAY)
    link = tmp_path / "outbox-link"
    link.symlink_to(real, target_is_directory=True)
    linked = cli.with_settings(mail_dir=str(link))
    code, document, stderr = purge(linked)
    assert code == 1, stderr
    mail = by_name(document)["mail_files"]
    assert mail["error"] == f"{link} is a symbolic link; give the directory itself"
    assert old.exists()
    assert [c["error"] for c in document["categories"] if c["name"] != "mail_files"] == [None] * 5


def test_names_that_only_look_like_ours_neither_stop_purge_nor_stand_for_a_batch(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    """An e-mail name with no such day, a leftover name with no such batch, or naming a
    batch that is not due: none stops the run or the categories after it, and a leftover's
    name never stands for the batch it names (whose stored manifest would go, and with it
    the only record that its folder is due)."""
    world = build_world(cli, session, clock, tmp_path)
    out = world.old_batch.parent
    no_day = world.mail_dir / "20270230T000000000000Z-00000000.eml"
    no_day.write_text("Votre code : 123456")
    for stray in (".batch-2.expired", ".batch-99999999999999999999.expired"):
        (out / stray).mkdir()
    code, document, stderr = purge(cli)
    assert (code, stderr) == (0, f"Warning: purge mail_files: {world.planted} is a symbolic "
                                 "link: left alone\n")  # fmt: skip
    found = by_name(document)
    assert [c["error"] for c in document["categories"]] == [None] * 6
    assert found["mail_files"]["count"] == 2
    assert found["batch_files"]["count"] == 2  # batches 1 and 3, as without the strays
    assert no_day.exists()
    assert sorted(p.name for p in out.iterdir()) == [world.young_batch.name]
    session.rollback()
    young = session.exec(select(LetterBatch).where(LetterBatch.id == 2)).one()
    assert young.manifest is not None  # its folder is purged when it is due, as ever


def test_an_event_dated_in_the_future_holding_the_archive_back_is_said(
    cli: Cli, clock: FakeClock, archived: list[dict[str, Any]]
) -> None:
    """The chain is cut at one place: an event written under a clock years ahead keeps every
    older event sealed after it. Purge archives what comes before it and says why the rest
    waits, every night, instead of keeping a year of events past their period silently."""
    now = clock.now
    clock.now = now + 3650 * DAY  # a clock set ten years ahead
    add_member(cli, "Avance")
    clock.now = now - 400 * DAY  # then right again: events past the period, sealed after it
    add_member(cli, "Ancienne")
    clock.now = now
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    events = by_name(document)["audit_events"]
    assert events["count"] == 0
    (said,) = events["skipped"]
    assert said.startswith("audit event #1 is dated ") and said.endswith(
        ", in the future: the 1 older event sealed after it waits until it is past the period"
    ), said
    assert f"Warning: purge audit_events: {said}" in stderr
    assert by_name(purge(cli, "--dry-run")[1])["audit_events"]["skipped"] == [said]


def test_a_second_purge_while_one_runs_is_refused_and_changes_nothing(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    """Two at once would each archive the same audit events (one file recorded, one copy
    no record names) and race each other to the same files."""
    world = build_world(cli, session, clock, tmp_path)
    before = snapshot(session)
    with one_run(session, PURGE_RUN):
        result = cli("purge")
        assert (result.exit_code, result.stderr) == (4, "Error: another purge is running\n")
        assert cli("purge", "--dry-run").exit_code == 0  # a survey changes nothing: it may
    assert snapshot(session) == before
    assert world.old_mail.exists()
    assert cli("purge").exit_code == 0  # the lock died with the run that held it
    assert not world.old_mail.exists()


def stop_after_putting_batches_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Purge interrupted as a kill would stop it, its batches out of sight, nothing recorded."""

    def killed(name: str) -> None:
        if name == "purge.batches_renamed":
            raise KeyboardInterrupt

    monkeypatch.setattr(purge_batches, "failpoint", killed)


def test_a_run_killed_after_renaming_batches_is_finished_by_the_next(
    cli: Cli,
    session: Session,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    archived: list[dict[str, Any]],
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    stop_after_putting_batches_aside(monkeypatch)
    assert cli("purge").exit_code == 130
    out = world.old_batch.parent
    # Out of the print house's sight, nothing deleted yet, nothing recorded.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [world.young_batch.name, ".batch-1.ours", ".batch-3.ours"]
    )
    assert not json.loads(cli("--json", "audit", "list", "--action", "purge.batch_files").stdout)
    monkeypatch.undo()
    _, document, _ = purge(cli)
    assert by_name(document)["batch_files"]["count"] == 2
    assert sorted(p.name for p in out.iterdir()) == [world.young_batch.name]
    (event,) = json.loads(cli("--json", "audit", "list", "--action", "purge.batch_files").stdout)
    assert event["details"]["batch_ids"] == [1, 3]


def test_shorter_periods_are_settings(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path
) -> None:
    write_eml(Path(cli.settings.mail_dir), clock.now - timedelta(hours=13))
    nir = add_member(cli, "Courte")
    close(cli, nir)
    clock.advance(days=31)
    strict = cli.with_settings(retention_closed_members_days=30)
    found = by_name(purge(strict, "--dry-run")[1])
    assert found["closed_members"]["count"] == 1
    assert found["mail_files"]["count"] == 1
    lax = cli.with_settings(retention_closed_members_days=3650, retention_mail_files_days=90)
    found = by_name(purge(lax, "--dry-run")[1])
    assert (found["closed_members"]["count"], found["mail_files"]["count"]) == (0, 0)
    assert found["closed_members"]["rule"] == (
        "closed more than 3,650 days ago (CPMS_RETENTION_CLOSED_MEMBERS_DAYS)"
    )
    with pytest.raises(NotReady, match=r"^CPMS_RETENTION_AUDIT_DAYS must be between 180 and"):
        load_settings({"CPMS_RETENTION_AUDIT_DAYS": "30"})


def test_a_batch_whose_folder_is_gone_loses_its_stored_manifest_and_says_so_once(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    out = world.old_batch.parent
    os.rename(out, tmp_path / "archived-by-hand")
    code, document, stderr = purge(cli)
    assert code == 0
    assert f"Warning: purge batch_files: {out} no longer exists: batch 1's" in stderr
    batches = by_name(document)["batch_files"]
    assert batches["count"] == 2
    assert batches["skipped"] == [
        f"{out} no longer exists: batch {n}'s files were not there" for n in (1, 3)
    ]
    session.rollback()
    manifests = dict(session.exec(select(LetterBatch.id, LetterBatch.manifest)).all())
    assert [batch_id for batch_id, manifest in manifests.items() if manifest] == [2]
    assert sorted(p.name for p in (tmp_path / "archived-by-hand").iterdir()) == sorted(
        [world.old_batch.name, world.young_batch.name, world.used_batch.name]
    )
    again = by_name(purge(cli)[1])["batch_files"]
    assert (again["count"], again["skipped"]) == (0, [])


def test_a_committed_batch_not_published_yet_keeps_its_files_and_manifest(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    """Its publication failed (a name taken, a full disk): `letters batch` publishes it from
    the stored manifest at its next run, so purge leaves both alone until then."""
    world = build_world(cli, session, clock, tmp_path)
    staging = world.old_batch.parent / ".batch-1.partial"
    os.rename(world.old_batch, staging)
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    batches = by_name(document)["batch_files"]
    assert (batches["count"], batches["skipped"]) == (
        1,
        [f"{staging} is not published yet: left for letters batch"],
    )
    assert staging.is_dir() and any(staging.glob("*.pdf"))
    session.rollback()
    assert session.get(LetterBatch, 1).manifest  # type: ignore[union-attr]


def kept_line(folder: Path, listing: str) -> str:
    """What purge says of a batch folder that holds something it did not write."""
    return (
        f"{folder} also holds what cpms-admin did not write ({listing}): left alone, and the "
        "directory with it"
    )


def test_a_file_left_in_a_due_batch_folder_stays_and_is_said_once(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    """The print house's receipt, an agent's note: not ours to delete. The batch's PDFs,
    manifest and index go; the note stays where it was, and so does its folder."""
    world = build_world(cli, session, clock, tmp_path)
    out = world.old_batch.parent
    note = world.old_batch / "accuse-reception.txt"
    note.write_text("reçu le 15/10, 1 pli")
    assert any(world.old_batch.glob("*.pdf")) and (world.old_batch / "manifest.json").exists()
    said = kept_line(world.old_batch, note.name)
    before = tree(out)
    code, document, stderr = purge(cli, "--dry-run")
    assert (code, tree(out)) == (0, before)
    assert by_name(document)["batch_files"]["skipped"] == [said]
    assert stderr.count(note.name) == 1 and f"Warning: purge batch_files: {said}\n" in stderr
    code, document, stderr = purge(cli)
    assert code == 0
    batches = by_name(document)["batch_files"]
    assert (batches["count"], batches["skipped"]) == (2, [said])
    assert stderr.count(note.name) == 1 and f"Warning: purge batch_files: {said}\n" in stderr
    assert [p.name for p in world.old_batch.iterdir()] == [note.name]
    assert note.read_text() == "reçu le 15/10, 1 pli"
    assert sorted(p.name for p in out.iterdir()) == [world.old_batch.name, world.young_batch.name]
    (event,) = json.loads(cli("--json", "audit", "list", "--action", "purge.batch_files").stdout)
    assert event["details"]["skipped"] == [said]
    again = by_name(purge(cli)[1])["batch_files"]
    assert (again["count"], again["skipped"]) == (0, [])
    assert note.read_text() == "reçu le 15/10, 1 pli"


def test_links_planted_in_a_due_batch_folder_are_neither_followed_nor_deleted(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.pdf").write_text("theirs")
    (world.old_batch / "archives").symlink_to(theirs, target_is_directory=True)
    (world.old_batch / "recu.pdf").symlink_to(theirs / "keep.pdf")
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    assert by_name(document)["batch_files"]["skipped"] == [
        kept_line(world.old_batch, "archives (a symbolic link), recu.pdf (a symbolic link)")
    ]
    assert sorted(p.name for p in world.old_batch.iterdir()) == ["archives", "recu.pdf"]
    assert (world.old_batch / "recu.pdf").is_symlink()
    assert [p.name for p in theirs.iterdir()] == ["keep.pdf"]
    assert (theirs / "keep.pdf").read_text() == "theirs"


def test_a_run_killed_after_putting_aside_a_folder_that_holds_a_note_is_finished(
    cli: Cli,
    session: Session,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    archived: list[dict[str, Any]],
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    note = world.old_batch / "note.txt"
    note.write_text("à garder")
    stop_after_putting_batches_aside(monkeypatch)
    assert cli("purge").exit_code == 130
    out = world.old_batch.parent
    # The batch's own files out of the print house's sight, all of them, manifest included;
    # the note back in the folder of the batch's name, alone.
    assert [p.name for p in world.old_batch.iterdir()] == [note.name]
    aside = out / ".batch-1.ours"
    assert any(aside.glob("*.pdf")) and (aside / "manifest.json").exists()
    assert note.name not in {p.name for p in aside.iterdir()}
    monkeypatch.undo()
    _, document, _ = purge(cli)
    batches = by_name(document)["batch_files"]
    assert (batches["count"], batches["skipped"]) == (2, [kept_line(world.old_batch, note.name)])
    assert sorted(p.name for p in out.iterdir()) == [world.old_batch.name, world.young_batch.name]
    assert [p.name for p in world.old_batch.iterdir()] == [note.name]
    assert note.read_text() == "à garder"


@pytest.mark.parametrize("tampered", ["deleted", "lists the note", "not JSON"])
def test_what_is_ours_is_read_from_the_stored_manifest_not_the_one_on_disk(
    cli: Cli,
    session: Session,
    clock: FakeClock,
    tmp_path: Path,
    archived: list[dict[str, Any]],
    tampered: str,
) -> None:
    """The manifest in the folder is a file like any other there: whatever became of it, a
    note beside it stays, and the batch's PDFs go."""
    world = build_world(cli, session, clock, tmp_path)
    note = world.old_batch / "note.txt"
    note.write_text("à garder")
    on_disk = world.old_batch / "manifest.json"
    if tampered == "deleted":
        on_disk.unlink()
    elif tampered == "lists the note":
        manifest = json.loads(on_disk.read_text())
        on_disk.write_text(json.dumps({**manifest, "files": [{"name": note.name}]}))
    else:
        on_disk.write_text("{")
    code, _, stderr = purge(cli)
    assert code == 0, stderr
    kept = {p.name for p in world.old_batch.iterdir()}
    assert note.name in kept and not any(name.endswith(".pdf") for name in kept)
    assert note.read_text() == "à garder"


def test_a_batch_folder_made_again_after_a_killed_run_loses_nothing(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    """A run killed with the batch's folder renamed aside, the note still in it; someone
    then makes a folder of the batch's name again, with a receipt. Nothing of either is
    deleted: the category fails, saying why, until someone looks."""
    world = build_world(cli, session, clock, tmp_path)
    (world.old_batch / "note.txt").write_text("à garder")
    aside = world.old_batch.parent / ".batch-1.expired"
    world.old_batch.rename(aside)  # where a killed run left it
    world.old_batch.mkdir()
    (world.old_batch / "recu.txt").write_text("reçu")
    code, document, _ = purge(cli)
    assert code == 1
    assert by_name(document)["batch_files"]["error"]
    assert (world.old_batch / "recu.txt").read_text() == "reçu"
    assert (aside / "note.txt").read_text() == "à garder"


def test_a_planted_put_aside_name_leaves_its_batch_alone_and_the_others_go(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    world = build_world(cli, session, clock, tmp_path)
    planted = world.old_batch.parent / ".batch-1.expired"
    planted.symlink_to(tmp_path)
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    batches = by_name(document)["batch_files"]
    assert (batches["count"], batches["skipped"]) == (
        1,
        [f"{planted} is a symbolic link: left alone"],
    )
    assert any(world.old_batch.glob("*.pdf")) and not world.used_batch.exists()
    assert planted.is_symlink() and tmp_path.is_dir()


def test_a_run_killed_right_after_renaming_a_folder_aside_is_finished(
    cli: Cli, session: Session, clock: FakeClock, tmp_path: Path, archived: list[dict[str, Any]]
) -> None:
    """Killed between renaming the batch's folder aside whole and taking its files out: the
    next run takes them, gives the rest back under the batch's name, and says so."""
    world = build_world(cli, session, clock, tmp_path)
    (world.old_batch / "note.txt").write_text("à garder")
    world.old_batch.rename(world.old_batch.parent / ".batch-1.expired")
    code, document, stderr = purge(cli)
    assert code == 0, stderr
    batches = by_name(document)["batch_files"]
    assert (batches["count"], batches["skipped"]) == (2, [kept_line(world.old_batch, "note.txt")])
    assert [p.name for p in world.old_batch.iterdir()] == ["note.txt"]
    assert sorted(p.name for p in world.old_batch.parent.iterdir()) == sorted(
        [world.old_batch.name, world.young_batch.name]
    )
