"""Retention of the audit log: the oldest events archived to a file and dropped, the chain
re-anchored. What remains still verifies and tampering with it is still caught; the archive
verifies on its own, links to what remains, and tampering with it is caught too."""

import gzip
import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from cpms_admin.audit_chain import archivable, archive_events, archive_events_into
from cpms_admin.errors import Conflict, Refused
from tests.audit_helpers import assert_chain_intact
from tests.factories import make_nir
from tests.harness import Cli, FakeClock

WHERE = ["--street", "4 rue Sala", "--postcode", "69002", "--city", "Lyon"]


def add_and_unlock(cli: Cli, count: int) -> list[str]:
    """`count` members added and unlocked by an agent: two events each."""
    nirs = [make_nir() for _ in range(count)]
    for nir in nirs:
        added = cli("member", "add", "--nir", nir, "--last-name", "Roux", "--first-name", "Léa",
                    "--no-welcome", *WHERE)  # fmt: skip
        assert added.exit_code == 0, added.output
        assert cli("account", "unlock", nir, "--reason", "called").exit_code == 0
    return nirs


def events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_event ORDER BY seq")).mappings().all()
    return [dict(row) for row in rows]


def verify_json(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("--json", "audit", "verify", *args)
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def aged(cli: Cli, clock: FakeClock, engine: Engine) -> list[dict[str, Any]]:
    """Eight events of last year, then four of this year."""
    add_and_unlock(cli, 4)
    clock.advance(days=365)
    add_and_unlock(cli, 2)
    found = events(engine)
    assert len(found) == 12
    return found


def test_old_events_are_archived_and_what_remains_verifies(
    cli: Cli, clock: FakeClock, session: Session, engine: Engine, aged: list[dict[str, Any]],
    tmp_path: Path,
) -> None:  # fmt: skip
    cutoff = clock() - timedelta(days=180)
    assert archivable(session, before=cutoff) == 8
    session.rollback()
    out = tmp_path / "audit-2026.jsonl"
    assert archive_events(session, before=cutoff, out=out, agent="agent.test", clock=clock) == 8
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [e["id"] for e in aged[:8]]
    assert {"seq", "prev_hash", "hash", "key_id"} <= set(lines[0])
    remaining = events(engine)
    assert [e["id"] for e in remaining[:4]] == [e["id"] for e in aged[8:]]
    (archived,) = [e for e in remaining if e["action"] == "audit.archive"]
    assert json.loads(archived["details"]) == {
        "before": cutoff.isoformat(timespec="seconds"),
        "events": 8,
        "through_seq": 8,
        "anchor_hash": aged[7]["hash"],
        "file": str(out),
    }
    report = assert_chain_intact(cli)
    assert (report["anchor_seq"], report["anchor_hash"], report["checked"]) == (
        8,
        aged[7]["hash"],
        5,
    )
    assert report["message"] == (
        "audit chain intact: 5 events checked (seq 9 to 13; events up to seq 8 archived)"
    )
    # The archive verifies on its own, and ends where the database's chain now starts.
    code, alone = verify_json(cli, "--archive", str(out))
    assert (code, alone["ok"], alone["checked"]) == (0, True, 8)
    assert (alone["anchor_seq"], alone["anchor_hash"]) == (0, "0" * 64)
    assert (alone["head_seq"], alone["head_hash"]) == (8, report["anchor_hash"])


def test_tampering_after_the_archive_is_still_caught(
    cli: Cli, clock: FakeClock, session: Session, engine: Engine, aged: list[dict[str, Any]],
    tmp_path: Path,
) -> None:  # fmt: skip
    cutoff = clock() - timedelta(days=180)
    archive_events(session, before=cutoff, out=tmp_path / "a.jsonl", agent="agent.test")
    first = events(engine)[0]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE id = :id"), {"id": first["id"]})
    code, report = verify_json(cli)
    assert (code, report["problem"], report["first_bad_seq"]) == (1, "deleted", 9)
    with engine.begin() as conn:  # the first kept event deleted, and the anchor moved on to it
        conn.execute(text("UPDATE audit_chain SET anchor_seq = 9, anchor_hash = :h"),
                     {"h": first["hash"]})  # fmt: skip
    assert verify_json(cli)[1]["problem"] == "head_changed"


def test_an_archive_changed_afterwards_is_caught(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "a.jsonl"
    archive_events(session, before=clock() - timedelta(days=180), out=out, agent="agent.test")
    lines = out.read_text().splitlines()
    event = json.loads(lines[3])
    event["reason"] = "nothing happened"
    lines[3] = json.dumps(event)
    out.write_text("\n".join(lines) + "\n")
    result = cli("audit", "verify", "--archive", str(out))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: audit chain broken at event #{event['id']} (seq {event['seq']}): its "
        "content does not match its hash: changed after it was written\n"
    )
    del lines[3]  # an archived event deleted from the file
    out.write_text("\n".join(lines) + "\n")
    assert verify_json(cli, "--archive", str(out))[1]["problem"] == "deleted"


@pytest.mark.parametrize(("cut", "first_bad_seq"), [(slice(0, -2), 7), (slice(3, None), 1)])
def test_an_archive_cut_short_at_either_end_is_caught_by_the_purge_s_record(
    cli: Cli, clock: FakeClock, session: Session, engine: Engine, aged: list[dict[str, Any]],
    tmp_path: Path, cut: slice, first_bad_seq: int,
) -> None:  # fmt: skip
    """What is left of an archive whose first or last lines were deleted still walks as a
    chain; the `audit.archive` event of the purge that wrote it says where it must start and
    end."""
    out = tmp_path / "audit-20260101T000000000000Z.jsonl"
    archive_events(session, before=clock() - timedelta(days=180), out=out, agent="agent.test")
    (record,) = [e["id"] for e in events(engine) if e["action"] == "audit.archive"]
    assert verify_json(cli, "--archive", str(out))[1]["message"].endswith(
        f"all that the purge recorded in audit event #{record} archived"
    )
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[cut]))
    result = cli("audit", "verify", "--archive", str(out))
    assert result.exit_code == 1
    held = "seq 1 to 6" if first_bad_seq == 7 else "seq 4 to 8"
    assert result.stderr == (
        f"Error: audit archive {out.name} holds {held}, but the purge that wrote it "
        f"(audit event #{record}) archived seq 1 to 8: deleted\n"
    )
    report = verify_json(cli, "--archive", str(out))[1]
    assert (report["ok"], report["problem"], report["first_bad_seq"]) == (
        False,
        "deleted",
        first_bad_seq,
    )
    renamed = out.rename(tmp_path / "elsewhere.jsonl")  # no record names it: said, not vouched
    code, report = verify_json(cli, "--archive", str(renamed))
    assert (code, report["ok"]) == (0, True)
    assert "the database holds no record of the purge that wrote it" in report["message"]


@pytest.mark.parametrize(
    ("column", "value"),
    [("seq", None), ("seq", "4"), ("seq", [4]), ("key_id", "1"), ("id", 4.5), ("hash", 7)],
)
def test_an_archived_line_of_the_wrong_types_is_named_not_a_traceback(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path,
    column: str, value: object,
) -> None:  # fmt: skip
    out = tmp_path / "a.jsonl"
    archive_events(session, before=clock() - timedelta(days=180), out=out, agent="agent.test")
    lines = out.read_text().splitlines()
    event = json.loads(lines[2])
    event[column] = value
    lines[2] = json.dumps(event)
    out.write_text("\n".join(lines) + "\n")
    result = cli("audit", "verify", "--archive", str(out))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {out}, line 3: not an archived event\n",
    )


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda line: line.replace('"reason":', '"reason":"FORGED","reason":', 1),
                     id="a-key-twice"),
        pytest.param(lambda line: line.replace("{", '{"approved_by":"DPO",', 1), id="a-new-key"),
        pytest.param(lambda line: line.replace('"agent":"', '"agent":"\u00e9', 1).replace(
            "\\u00e9", "\u00e9"), id="not-ascii"),
    ],
)  # fmt: skip
def test_an_archived_line_a_reader_and_the_walk_would_read_apart_is_refused(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path,
    damage: Callable[[str], str],
) -> None:  # fmt: skip
    """A key given twice shows a reader one value and the walk the other; a key the table
    does not have is covered by no hash; purge writes ASCII: each is no archived event."""
    out = tmp_path / "a.jsonl"
    archive_events(session, before=clock() - timedelta(days=180), out=out, agent="agent.test")
    lines = out.read_text().splitlines(keepends=True)
    lines[2] = damage(lines[2])
    out.write_bytes("".join(lines).encode())
    result = cli("audit", "verify", "--archive", str(out))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {out}, line 3: not an archived event\n",
    )


def test_an_empty_or_compressed_file_is_no_archive_and_an_emptied_one_is_caught(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "audit-20260101T000000000000Z.jsonl"
    archive_events(session, before=clock() - timedelta(days=180), out=out, agent="agent.test")
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(out.read_bytes()))
    result = cli("--json", "audit", "verify", "--archive", str(packed))
    assert (result.exit_code, json.loads(result.stdout)) == (
        2,
        {"error": f"{packed}, line 1: not an archived event", "exit_code": 2},
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = cli("audit", "verify", "--archive", str(empty))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {empty}: no event, not an archive (purge never writes one empty)\n",
    )
    out.write_text("")  # the file purge wrote, emptied: its record says what it held
    code, report = verify_json(cli, "--archive", str(out))
    assert (code, report["problem"], report["first_bad_seq"], report["checked"]) == (
        1,
        "deleted",
        1,
        0,
    )
    assert report["message"].startswith(f"audit archive {out.name} holds no event, but the")


def test_a_line_longer_than_any_event_is_refused_before_it_is_read_whole(
    cli: Cli, tmp_path: Path
) -> None:
    """A zero-filled archive (a crash, a disk image) read line by line: /dev/zero took all
    the machine's memory, and the kernel's OOM killer with it."""
    for source in (Path("/dev/zero"), tmp_path / "zeros.jsonl"):
        if source.parent == tmp_path:
            source.write_bytes(b"\0" * (3 << 20))
        result = cli("audit", "verify", "--archive", str(source))
        assert (result.exit_code, result.stderr) == (
            2,
            f"Error: {source}, line 1: longer than 1 MiB, which no archived event is: not an "
            "archive\n",
        )


def test_a_file_left_by_an_archive_killed_while_writing_is_removed_by_the_next(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path
) -> None:
    """kill -9 runs no `finally`: the hidden temporary copy of the events would stay for
    good, under a name (the run's moment) no later run writes again."""
    folder = tmp_path / "archives"
    folder.mkdir(mode=0o700)
    left = folder / ".audit-20260101T000000000000Z.jsonl.0badf00d.tmp"
    left.write_text('{"id": 1, "agent": "alice"}\n')
    os.utime(left, (time.time() - 60, time.time() - 60))  # settled: no live writer
    stranger = folder / "notes.txt"
    stranger.write_text("not ours")
    archive_events_into(session, before=clock() - timedelta(days=180), directory=folder,
                        agent="agent.test", clock=clock)  # fmt: skip
    assert not left.exists()
    assert sorted(p.name for p in folder.iterdir()) == [
        f"audit-{clock().strftime('%Y%m%dT%H%M%S%f')}Z.jsonl",
        "notes.txt",
    ]


def test_events_held_back_behind_a_later_one_have_no_oldest_to_report(
    cli: Cli, clock: FakeClock
) -> None:
    """A clock set back: old-dated events sealed after a recent one cannot be archived
    before it. The dry run said 0 to archive and named an oldest; an oldest goes with a
    count, in every category."""
    nir = make_nir()
    added = cli(
        *("member", "add", "--nir", nir, "--last-name", "Roux", "--first-name", "Léa"),
        *("--street", "1 rue de la Paix", "--postcode", "75002", "--city", "Paris"),
    )
    assert added.exit_code == 0  # an event dated now, sealed first
    clock.advance(days=-3 * 365)
    assert cli("member", "update", nir, "--first-name", "Zoé").exit_code == 0
    clock.advance(days=3 * 365 + 1)
    result = cli("--json", "purge", "--dry-run")
    found = {c["name"]: c for c in json.loads(result.stdout)["categories"]}["audit_events"]
    assert (found["count"], found["oldest"]) == (0, None), found


def test_a_purge_with_nothing_to_archive_removes_a_killed_archive_s_copy_at_once(
    cli: Cli, tmp_path: Path
) -> None:
    """Purge run again at once after a kill -9 while archiving: the hidden copy of the old
    events was left until a run at least 10 s later that had events to archive."""
    folder = cli.settings.audit_archive
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    left = folder / ".audit-20260101T000000000000Z.jsonl.0badf00d.tmp"
    left.write_text('{"id": 1, "agent": "alice"}\n')  # just written: no settling needed
    assert cli("purge").exit_code == 0
    assert not left.exists()


def test_a_second_archive_starts_where_the_first_ended(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path
) -> None:
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    archive_events(session, before=clock() - timedelta(days=180), out=first, agent="agent.test")
    clock.advance(days=365)
    add_and_unlock(cli, 1)
    assert archive_events(session, before=clock() - timedelta(days=180), out=second,
                          agent="agent.test", clock=clock) == 5  # fmt: skip
    one = verify_json(cli, "--archive", str(first))[1]
    two = verify_json(cli, "--archive", str(second))[1]
    assert (two["anchor_seq"], two["anchor_hash"]) == (one["head_seq"], one["head_hash"])
    report = assert_chain_intact(cli)
    assert (report["anchor_seq"], report["anchor_hash"]) == (two["head_seq"], two["head_hash"])


def test_a_broken_chain_is_not_archived(
    cli: Cli, clock: FakeClock, session: Session, engine: Engine, aged: list[dict[str, Any]],
    tmp_path: Path,
) -> None:  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_event SET agent = 'x' WHERE id = :id"), {"id": aged[2]["id"]}
        )
    archives = tmp_path / "archives"
    archives.mkdir()
    with pytest.raises(Refused, match=f"the chain is broken at event #{aged[2]['id']} "):
        archive_events(session, before=clock(), out=archives / "a.jsonl", agent="agent.test")
    assert list(archives.iterdir()) == []  # no file, not even a temporary one
    assert len(events(engine)) == 12  # nothing dropped: the break stays for verify to name


def test_nothing_old_enough_writes_no_file_and_an_existing_file_is_refused(
    cli: Cli, clock: FakeClock, session: Session, engine: Engine, aged: list[dict[str, Any]],
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "a.jsonl"
    too_old = clock() - timedelta(days=400)  # before the first event
    assert archivable(session, before=too_old) == 0
    assert archive_events(session, before=too_old, out=out, agent="agent.test") == 0
    assert not out.exists()
    out.write_text("kept\n")
    with pytest.raises(Conflict, match="already exists"):
        archive_events(session, before=clock(), out=out, agent="agent.test")
    assert out.read_text() == "kept\n" and len(events(engine)) == 12


def test_an_archive_into_a_folder_makes_it_private_and_names_the_file_by_the_moment(
    cli: Cli, clock: FakeClock, session: Session, aged: list[dict[str, Any]], tmp_path: Path
) -> None:
    folder = tmp_path / "archives" / "audit"
    cutoff = clock() - timedelta(days=180)
    assert (
        archive_events_into(
            session, before=cutoff, directory=folder, agent="agent.test", clock=clock
        )
        == 8
    )
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    (made,) = folder.iterdir()
    assert made.name == f"audit-{clock().strftime('%Y%m%dT%H%M%S%f')}Z.jsonl"
    assert verify_json(cli, "--archive", str(made))[1]["checked"] == 8
