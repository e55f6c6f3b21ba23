"""The events written before the chain existed (migration 0011): `db upgrade` seals them, in
id order, as the chain's first events; if it was interrupted after migrating, nothing can be
written until it is run again. Then `audit verify` vouches for them."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from cpms_admin.db import MIGRATIONS_DIR, make_engine, upgrade_schema
from tests.audit_helpers import assert_chain_intact
from tests.databases import record_test_pepper
from tests.factories import make_nir
from tests.harness import Cli

OLD_EVENTS = [("agent.a", "member.add"), ("agent.b", "account.unlock"), ("cron", "letters.batch")]


@pytest.fixture
def at_0007(empty_db_url: str) -> Iterator[Engine]:
    """A database at revision 0007 with audit events written as 0007's code wrote them."""
    engine = make_engine(empty_db_url, must_exist=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
    with engine.begin() as conn:
        for agent, action in OLD_EVENTS:
            conn.execute(
                text(
                    "INSERT INTO audit_event (at, agent, action, outcome, details) "
                    "VALUES (:at, :agent, :action, 'ok', '{\"n\": 1}')"
                ),
                {"at": datetime(2026, 6, 1, tzinfo=UTC), "agent": agent, "action": action},
            )
    yield engine
    engine.dispose()


def chain(engine: Engine) -> list[tuple[int, int | None, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, seq, action FROM audit_event ORDER BY id")).all()
    return [(row[0], row[1], row[2]) for row in rows]


def test_db_upgrade_seals_the_events_from_before_the_chain_first(
    cli: Cli, at_0007: Engine, empty_db_url: str
) -> None:
    on_old = cli.with_settings(database_url=empty_db_url)
    result = on_old("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "Note: sealed 3 audit events written before the audit chain existed" in result.stderr
    found = chain(at_0007)
    assert found[:3] == [(1, 1, "member.add"), (2, 2, "account.unlock"), (3, 3, "letters.batch")]
    assert [action for _, _, action in found[3:]] == ["pepper.record", "db.upgrade"]
    upgraded = json.loads(on_old("--json", "audit", "list", "--action", "db.upgrade").stdout)
    assert upgraded[0]["details"]["events_sealed"] == 3
    report = assert_chain_intact(on_old)
    assert (report["checked"], report["head_seq"]) == (5, 5)
    again = on_old("db", "upgrade")  # nothing left to seal
    assert again.exit_code == 0 and "sealed" not in again.stderr
    with at_0007.begin() as conn:  # the old events are covered like any other
        conn.execute(text("UPDATE audit_event SET agent = 'someone' WHERE id = 2"))
    verified = on_old("--json", "audit", "verify")
    assert verified.exit_code == 1
    assert json.loads(verified.stdout)["first_bad_id"] == 2


def test_an_upgrade_interrupted_after_migrating_is_finished_by_running_it_again(
    cli: Cli, at_0007: Engine, empty_db_url: str
) -> None:
    upgrade_schema(at_0007)  # migrated, then killed before sealing
    record_test_pepper(at_0007)
    on_old = cli.with_settings(database_url=empty_db_url)
    waiting = on_old("--json", "audit", "verify")
    assert waiting.exit_code == 1
    report = json.loads(waiting.stdout)
    assert (report["problem"], report["checked"]) == ("unsealed", 0)
    assert report["message"] == (
        "3 audit events written before the chain existed are not sealed: an upgrade "
        "interrupted right after migration 0011 leaves them so, and so does a chain reset by "
        "hand; once you know they are genuine (docs/audit.md): cpms-admin db upgrade "
        "--seal-waiting"
    )
    nir = make_nir()
    add = ["member", "add", "--nir", nir, "--last-name", "Roux", "--first-name", "Léa",
           "--street", "4 rue Sala", "--postcode", "69002", "--city", "Lyon"]  # fmt: skip
    refused = on_old(*add)  # no event sealed after them before they are: nothing written
    assert refused.exit_code == 5
    assert refused.stderr.startswith("Error: audit events are not sealed: an upgrade interrupted")
    assert on_old("--json", "member", "show", nir).exit_code == 3
    # The database cannot tell this from a chain reset by hand: sealing is asked for.
    plain = on_old("db", "upgrade")
    assert plain.exit_code == 5
    assert plain.stderr.startswith("Error: 3 audit events not sealed: an upgrade interrupted")
    again = on_old("db", "upgrade", "--seal-waiting")
    assert again.exit_code == 0 and "sealed 3 audit events" in again.stderr
    assert on_old(*add).exit_code == 0
    assert [seq for _, seq, _ in chain(at_0007)] == [1, 2, 3, 4]
    assert assert_chain_intact(on_old)["checked"] == 4


def test_an_event_written_by_hand_after_the_migration_is_not_sealed(
    cli: Cli, at_0007: Engine, empty_db_url: str
) -> None:
    upgrade_schema(at_0007)
    with at_0007.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_event (id, at, agent, action, outcome, details) "
                "VALUES (50, :at, 'boss', 'member.close', 'ok', '{}')"
            ),
            {"at": datetime(2026, 6, 2, tzinfo=UTC)},
        )
    on_old = cli.with_settings(database_url=empty_db_url)
    assert on_old("db", "upgrade", "--seal-waiting").exit_code == 0  # migrated, interrupted
    result = on_old("--json", "audit", "verify")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["first_bad_id"] == 50
    assert (50, None, "member.close") in chain(at_0007)


def test_an_upgrade_refused_for_its_missing_pepper_leaves_the_schema_as_it_was(
    cli: Cli, at_0007: Engine, empty_db_url: str, tmp_path: Path
) -> None:
    """An old database whose pepper was not found where this release looks for it (it used
    to live in the working directory): refused before any migration, so that the right run,
    pepper found, upgrades it as if nothing happened, sealing the old events."""
    record_test_pepper(at_0007)
    missing = tmp_path / "elsewhere" / "pepper"
    on_old = cli.with_settings(database_url=empty_db_url, pepper=None, pepper_file=str(missing))
    refused = on_old("db", "upgrade")
    assert refused.exit_code == 5, refused.output
    assert f"no pepper at {missing}, but this database recorded a pepper" in refused.stderr
    with at_0007.connect() as conn:  # no migration ran: 0007's schema, its events as they were
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
        assert conn.execute(text("SELECT count(*) FROM audit_event")).scalar() == 3
    assert not missing.parent.exists()
    upgraded = cli.with_settings(database_url=empty_db_url)("db", "upgrade")  # pepper found
    assert upgraded.exit_code == 0, upgraded.output
    assert [action for _, _, action in chain(at_0007)] == [
        "member.add", "account.unlock", "letters.batch", "db.upgrade"
    ]  # fmt: skip
    assert_chain_intact(cli.with_settings(database_url=empty_db_url))
