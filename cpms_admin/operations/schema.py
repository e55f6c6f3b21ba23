"""Creating and migrating the schema, and the pepper the hashes need."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from cpms_admin import audit
from cpms_admin.agents.registry import authorize, identity
from cpms_admin.audit_chain.seal import UNSEALED_WHY, keyring, seal_waiting, upgrading, waiting
from cpms_admin.clock import Clock, system_clock
from cpms_admin.db import (
    ADVISORY_CLASS,
    UPGRADE_LOCK_ID,
    current_revision,
    make_engine,
    release,
    schema_behind,
    session_scope,
    sqlite_path,
    transaction,
    upgrade_schema,
)
from cpms_admin.english import count
from cpms_admin.errors import NotReady
from cpms_admin.faults import failpoint
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.operations import peppers
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import AuditAction

AGENTS_REVISION = "0008"  # the migration that brought agents (revisions sort as text)
CHAIN_REVISION = "0011"  # the migration that brought the audit chain


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    latest: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest

    @property
    def advice(self) -> str:
        return "up to date" if self.up_to_date else schema_behind(self.current)[1]

    def as_json(self) -> dict[str, object]:
        """`db status --json`."""
        return {"current": self.current, "latest": self.latest, "up_to_date": self.up_to_date}


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str
    pepper_created: Path | None
    events_sealed: int = 0  # audit events from before the chain, sealed by this upgrade
    pin_hashes_sealed: int = 0  # imported PIN hashes stored unsealed, sealed by this upgrade

    def as_json(self) -> dict[str, object]:
        """`db upgrade --json`: the revisions before and after, and the pepper file made."""
        created = str(self.pepper_created) if self.pepper_created else None
        return {"before": self.before, "after": self.after, "pepper_created": created}


def schema_status(settings: Settings) -> SchemaStatus:
    """The schema's revision; NotReady for a SQLite file that does not exist (a typo in the
    URL must not create an empty database)."""
    engine = make_engine(settings.database_url)
    try:
        return SchemaStatus(current=current_revision(engine), latest=HEAD_REVISION)
    finally:
        release(engine)


def upgrade(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    create_dirs: bool = False,
    seal_waiting_events: bool = False,
) -> UpgradeResult:
    """Migrate to the latest revision (idempotent), then settle the pepper: check it against
    the database's record, record it, or create one for a database without hashes
    (`peppers.settle_pepper`); then seal the audit events written before the chain existed
    (`audit_chain.seal_waiting`), and the imported PIN hashes stored unsealed
    (`peppers.seal_unsealed_hashes`). A SQLite file's folder must exist unless `create_dirs`;
    so must the folder of a pepper file it would make (`peppers.check_pepper_folder`).

    Events from before the chain are sealed by the upgrade that crosses migration 0011, and
    afterwards only when asked (`seal_waiting_events`): a database already past it that has
    some cannot tell an upgrade interrupted there from a chain reset by hand, whose rewritten
    events an automatic seal would vouch for.

    A database that has agents is upgraded by an admin only; the migration that brings
    agents makes its runner the first admin (so does creating a database)."""
    from cpms_admin.pepper import pepper_given, read_peppers

    # NotReady before anything is made: PostgreSQL needs a pepper set, and one that is there
    # must be readable as it is (its owner, its mode): the schema would be migrated otherwise,
    # and the pepper's step refused after it.
    if pepper_given(settings):
        read_peppers(settings)
    elif not create_dirs and _new_sqlite_file(settings.database_url):
        peppers.check_pepper_folder(settings)  # opening the database would make its file
    engine = make_engine(settings.database_url, must_exist=False, create_dirs=create_dirs)
    try:
        with _one_upgrade_at_a_time(engine):
            return _upgrade(engine, settings, clock, seal_waiting_events, create_dirs)
    finally:
        release(engine)


def _new_sqlite_file(url: str) -> bool:
    """Whether `url` names a SQLite file that does not exist yet (a new database)."""
    path = sqlite_path(url)
    try:
        return path is not None and not path.exists()
    except OSError:  # a folder this user cannot open: `make_engine` says so
        return False


@contextmanager
def _one_upgrade_at_a_time(engine: Engine) -> Iterator[None]:
    """PostgreSQL: upgrades run one after the other (a session advisory lock, on a
    connection of its own), so a second one started meanwhile finds the schema the first
    made instead of failing on the catalog half-way through it. SQLite's write lock already
    serialises the migrations."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = {"cls": ADVISORY_CLASS, "id": UPGRADE_LOCK_ID}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        holder.execute(text("SELECT pg_advisory_lock(:cls, :id)"), key)
        try:
            failpoint("upgrade.locked")
            yield
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:cls, :id)"), key)


def _upgrade(
    engine: Engine, settings: Settings, clock: Clock, seal_waiting_events: bool, create_dirs: bool
) -> UpgradeResult:
    found = current_revision(engine)
    if found is not None and found > HEAD_REVISION:  # Alembic would fail: it knows no such
        what, fix = schema_behind(found)
        raise NotReady(f"database schema is {what}; {fix}")
    with session_scope(engine, read_only=True) as session:
        if found is not None and found >= AGENTS_REVISION:
            agent = authorize(session, command="db upgrade").name
        else:
            agent = identity(session)
        if found is not None:  # refused now, not once the schema is migrated
            peppers.check_no_pepper_needed(session, settings)
        if not create_dirs:  # so is a new pepper's missing folder
            peppers.check_pepper_folder(settings)
    before = upgrade_schema(engine)  # another upgrade may have run since `found`
    with session_scope(engine) as session:
        # The pepper first: it keys the audit chain, whose events from before it (0011)
        # are sealed next (with the pepper's own event, if it records one), before this
        # upgrade's own event.
        if seal_waiting_events or before is None or before < CHAIN_REVISION:
            upgrading(session)
        elif unsealed := waiting(session):
            raise NotReady(f"{count(unsealed, 'audit event')} not sealed: {UNSEALED_WHY}")
        created = peppers.settle_pepper(
            session, settings=settings, agent=agent, now=clock(), create_dirs=create_dirs
        )
        sealed = seal_waiting(session)
        pin_hashes_sealed = peppers.seal_unsealed_hashes(
            session, peppers=keyring(session).peppers, agent=agent, now=clock()
        )
        if before != HEAD_REVISION:
            with transaction(session):
                audit.record(
                    session,
                    agent=agent,
                    action=AuditAction.db_upgrade,
                    before=before,
                    after=HEAD_REVISION,
                    events_sealed=sealed,
                )
    return UpgradeResult(
        before=before,
        after=HEAD_REVISION,
        pepper_created=created,
        events_sealed=sealed,
        pin_hashes_sealed=pin_hashes_sealed,
    )
