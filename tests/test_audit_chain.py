"""The audit chain, checked as an outsider would: events written by the commands, then the
database tampered with directly through SQL, and `audit verify` must exit 1 naming the event
(or the place) that was changed, deleted, inserted or moved; an intact log exits 0."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from cpms_admin.audit_chain.form import EVENT_FIELDS, EVENTS, GENESIS
from tests.factories import make_member
from tests.harness import Cli

VERIFY_KEYS = {
    "ok",
    "checked",
    "first_bad_id",
    "first_bad_seq",
    "problem",
    "message",
    "anchor_seq",
    "anchor_hash",
    "head_seq",
    "head_hash",
}


def verify(cli: Cli, *args: str) -> tuple[int, dict[str, Any], str]:
    """`audit verify --json`: exit code, the report, stderr."""
    result = cli("--json", "audit", "verify", *args)
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert set(report) == VERIFY_KEYS
    return result.exit_code, report, result.stderr


def broken(cli: Cli) -> dict[str, Any]:
    """The report of a broken chain, with its one line on stderr (and the plain command)."""
    code, report, stderr = verify(cli)
    assert code == 1 and report["ok"] is False, report
    assert stderr == f"Error: {report['message']}\n"
    plain = cli("audit", "verify")
    assert (plain.exit_code, plain.stdout, plain.stderr) == (1, "", stderr)
    return report


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def chain(engine: Engine) -> list[dict[str, Any]]:
    """The events in chain order: id, seq and what is needed to name them."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_event ORDER BY seq")).mappings().all()
    return [dict(row) for row in rows]


@pytest.fixture
def story(cli: Cli, session: Session, engine: Engine) -> list[dict[str, Any]]:
    """A few members and what agents did to them: a dozen events, in chain order."""
    members = [make_member(session) for _ in range(3)]
    for member in members:
        moved = ["--street", "5 rue de la Paix", "--reason", "moved"]
        assert cli("account", "unlock", member.nir, "--reason", "called").exit_code == 0
        assert cli("member", "update", member.nir, *moved).exit_code == 0
    events = chain(engine)
    assert len(events) >= 9 and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def test_an_intact_log_verifies(cli: Cli, story: list[dict[str, Any]]) -> None:
    code, report, stderr = verify(cli)
    assert (code, stderr) == (0, "")
    assert report == {
        "ok": True,
        "checked": len(story),
        "first_bad_id": None,
        "first_bad_seq": None,
        "problem": None,
        "message": f"audit chain intact: {len(story)} events checked (seq 1 to {len(story)})",
        "anchor_seq": 0,
        "anchor_hash": GENESIS,
        "head_seq": len(story),
        "head_hash": story[-1]["hash"],
    }
    plain = cli("audit", "verify")
    assert (plain.exit_code, plain.stdout) == (0, f"{report['message']}\n")


def test_a_new_database_verifies(cli: Cli) -> None:
    code, report, _ = verify(cli)
    assert (code, report["checked"], report["message"]) == (
        0,
        0,
        "audit chain intact: no event since its start",
    )


# Each column an event has, changed by hand: the event no longer matches its hash.
def tampered(column: str, event: dict[str, Any]) -> Any:
    value = event[column]
    if column == "id":
        return value + 100_000
    if column == "key_id":
        return value + 1  # no pepper made it
    if value is not None and EVENTS.c[column].nullable:
        return None  # reason, member_id: erased
    if column == "at":
        return value + timedelta(seconds=1) if isinstance(value, datetime) else "2000-01-01"
    if column == "prev_hash":
        return "f" * 64
    return "tampered"


@pytest.mark.parametrize("column", EVENT_FIELDS)
def test_any_column_changed_is_named(
    cli: Cli, engine: Engine, story: list[dict[str, Any]], column: str
) -> None:
    # `member.update` of the second member: an agent, a member, a reason, details.
    target = [e for e in story if e["action"] == "member.update"][1]
    sql(
        engine,
        f"UPDATE audit_event SET {column} = :value WHERE id = :id",
        value=tampered(column, target),
        id=target["id"],
    )
    report = broken(cli)
    moved_id = target["id"] + 100_000 if column == "id" else target["id"]
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "changed",
        moved_id,
        target["seq"],
    )
    assert report["message"].startswith(f"audit chain broken at event #{moved_id} ")
    assert report["checked"] == target["seq"] - 1


def test_a_changed_reason_reads_as_the_issue_says(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    target = story[4]
    sql(
        engine, "UPDATE audit_event SET reason = 'nothing happened' WHERE id = :id", id=target["id"]
    )
    assert broken(cli)["message"] == (
        f"audit chain broken at event #{target['id']} (seq {target['seq']}): its content "
        "does not match its hash: changed after it was written"
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [("at", "garbage"), ("at", 1234), ("key_id", "abc"), ("details", '{"reason": ')],
)
def test_a_value_its_column_cannot_hold_is_named_not_a_traceback(
    cli: Cli, engine: Engine, story: list[dict[str, Any]], column: str, value: object
) -> None:
    """SQLite keeps text in an integer or date column: an edit by hand, named as one (verify
    crashed), and `audit list` refuses in one line."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses such a value in the first place")
    target = story[4]
    sql(
        engine,
        f"UPDATE audit_event SET {column} = :value WHERE id = :id",
        value=value,
        id=target["id"],
    )
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "changed",
        target["id"],
        target["seq"],
    )
    if column in ("at", "details"):
        listed = cli("audit", "list")
        assert listed.exit_code == 1
        assert listed.stderr.startswith("Error: an audit event holds a value its column cannot")
        assert listed.stderr.endswith("cpms-admin audit verify names the event\n")


def test_an_event_deleted_in_the_middle_is_named_by_its_place(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    before, gone, after = story[3], story[4], story[5]
    sql(engine, "DELETE FROM audit_event WHERE id = :id", id=gone["id"])
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "deleted",
        None,
        gone["seq"],
    )
    assert report["message"] == (
        f"audit chain broken at seq {gone['seq']} after event #{before['id']} is missing, the "
        f"chain resumes at event #{after['id']} (seq {after['seq']}): deleted"
    )


def test_the_first_or_the_last_event_deleted_is_named(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    sql(engine, "DELETE FROM audit_event WHERE id = :id", id=story[-1]["id"])
    report = broken(cli)
    assert (report["problem"], report["first_bad_seq"]) == ("deleted", story[-1]["seq"])
    assert report["message"] == (
        f"audit chain broken at seq {story[-1]['seq']}, the chain's last event, is missing: deleted"
    )
    sql(engine, "DELETE FROM audit_event WHERE id = :id", id=story[0]["id"])
    assert (broken(cli)["problem"], broken(cli)["first_bad_seq"]) == ("deleted", 1)


def test_the_last_events_deleted_and_the_head_moved_back_is_caught(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    last, kept = story[-1], story[-2]
    sql(engine, "DELETE FROM audit_event WHERE id = :id", id=last["id"])
    sql(
        engine,
        "UPDATE audit_chain SET seq = :seq, hash = :hash",
        seq=kept["seq"],
        hash=kept["hash"],
    )
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "head_changed",
        None,
        None,
    )
    # No one can write past a head moved by hand: that would seal over what was done.
    with engine.connect() as conn:
        nir = conn.execute(text("SELECT nir FROM member")).scalars().first()
    refused = cli("account", "unlock", nir, "--reason", "x")
    assert refused.exit_code == 5
    assert "the audit chain's head does not match its seal" in refused.stderr
    assert len(chain(engine)) == len(story) - 1


def test_an_event_inserted_by_hand_is_named(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    sql(
        engine,
        "INSERT INTO audit_event (id, at, agent, action, outcome, details) "
        "VALUES (9999, :at, 'boss', 'member.close', 'ok', '{}')",
        at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
    )
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "inserted",
        9999,
        None,
    )
    assert report["message"] == (
        "audit chain broken at event #9999 is not in the chain (no seq): inserted by hand"
    )
    assert report["checked"] == len(story)  # the chain itself is whole


def test_an_event_forged_past_the_head_is_named(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    last = story[-1]
    sql(
        engine,
        "INSERT INTO audit_event (id, at, agent, action, outcome, details, seq, prev_hash, "
        "hash, key_id) VALUES (9999, :at, 'boss', 'member.close', 'ok', '{}', :seq, :prev, "
        ":hash, 1)",
        at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
        seq=last["seq"] + 1,
        prev=last["hash"],
        hash="0" * 64,
    )
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "inserted",
        9999,
        last["seq"] + 1,
    )


def test_two_events_swapped_are_named_where_the_first_moved(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    a, b = story[2], story[6]
    sql(engine, "UPDATE audit_event SET seq = -1 WHERE id = :id", id=a["id"])
    sql(engine, "UPDATE audit_event SET seq = :seq WHERE id = :id", seq=a["seq"], id=b["id"])
    sql(engine, "UPDATE audit_event SET seq = :seq WHERE id = :id", seq=b["seq"], id=a["id"])
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"], report["first_bad_seq"]) == (
        "out_of_order",
        b["id"],
        a["seq"],
    )
    assert "sealed after another event than the one before it: moved" in report["message"]


def test_the_anchor_moved_by_hand_is_caught(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    # Hiding the first events: deleted, and the chain said to start after them.
    sql(engine, "DELETE FROM audit_event WHERE seq <= 2")
    sql(engine, "UPDATE audit_chain SET anchor_seq = 2, anchor_hash = :h", h=story[1]["hash"])
    assert broken(cli)["problem"] == "head_changed"


@pytest.mark.parametrize("key_id", [0, -1])
def test_an_event_said_sealed_by_a_pepper_that_never_was_is_named_changed(
    cli: Cli, engine: Engine, story: list[dict[str, Any]], key_id: int
) -> None:
    """Pepper ids start at 1: an event naming 0 was changed by hand, not sealed with a pepper
    to put back (verify said "put its line back", exit 5, and named no event)."""
    target = story[4]
    sql(engine, "UPDATE audit_event SET key_id = :k WHERE id = :id", k=key_id, id=target["id"])
    report = broken(cli)
    assert (report["problem"], report["first_bad_id"]) == ("changed", target["id"])


@pytest.mark.parametrize("key_id", [0, -1, "a", 1.5])
def test_a_head_said_sealed_by_a_pepper_that_never_was_is_caught(
    cli: Cli, session: Session, engine: Engine, story: list[dict[str, Any]], key_id: object
) -> None:
    """Every command that writes checks the head first: a key id no pepper has was "put its
    line back" (0) or a traceback (a word, on SQLite), for verify and every write."""
    if not isinstance(key_id, int) and engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL refuses such a value in the first place")
    member = make_member(session)
    sql(engine, "UPDATE audit_chain SET key_id = :k", k=key_id)
    assert broken(cli)["problem"] == "head_changed"
    unlocked = cli("account", "unlock", member.nir, "--reason", "called")
    assert unlocked.exit_code == 5
    assert unlocked.stderr.startswith("Error: the audit chain's head does not match its seal")


def test_the_head_deleted_is_caught(cli: Cli, engine: Engine, story: list[dict[str, Any]]) -> None:
    sql(engine, "DELETE FROM audit_chain")
    assert broken(cli)["message"] == (
        "audit chain broken: the chain's head is missing (deleted by hand)"
    )


def test_every_column_is_covered_and_none_has_a_server_default() -> None:
    """The hash covers every column but the event's place and the hash itself, whatever
    columns later migrations add; their values must be known when the event is sealed."""
    assert set(EVENT_FIELDS) == {c.name for c in EVENTS.columns} - {"seq", "hash"}
    assert [c.name for c in EVENTS.columns if c.server_default is not None] == []


def test_a_chain_reset_by_hand_is_not_sealed_again_by_db_upgrade(
    cli: Cli, engine: Engine, story: list[dict[str, Any]]
) -> None:
    """Someone who can write the database rewrites an event, then puts every event and the
    head back as migration 0011 left them. `db upgrade` sealed the forgery and verify then
    said intact; now the upgrade refuses, and verify keeps saying the chain is not whole."""
    target = story[4]
    sql(engine, "UPDATE audit_event SET reason = 'forged' WHERE id = :id", id=target["id"])
    sql(engine, "UPDATE audit_event SET seq = NULL, prev_hash = NULL, hash = NULL, key_id = NULL")
    sql(
        engine,
        "UPDATE audit_chain SET seq = 0, hash = :zero, anchor_seq = 0, anchor_hash = :zero, "
        "mac = NULL, key_id = NULL, legacy_max_id = (SELECT max(id) FROM audit_event)",
        zero=GENESIS,
    )
    upgrade = cli("db", "upgrade")
    assert upgrade.exit_code == 5
    assert upgrade.stderr.startswith(f"Error: {len(story)} audit events not sealed:")
    assert "so does a chain reset by hand" in upgrade.stderr
    report = broken(cli)
    assert (report["problem"], report["checked"]) == ("unsealed", 0)
