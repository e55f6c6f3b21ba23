"""Creating and migrating the schema, and the pepper the hashes need."""

from dataclasses import dataclass
from pathlib import Path

from cpms_admin.db import current_revision, make_engine, session_scope, upgrade_schema
from cpms_admin.migrations import HEAD_REVISION
from cpms_admin.services import audit
from cpms_admin.settings import Settings


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    latest: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str
    pepper_created: Path | None


def schema_status(settings: Settings) -> SchemaStatus:
    engine = make_engine(settings.database_url, must_exist=False)
    try:
        return SchemaStatus(current=current_revision(engine), latest=HEAD_REVISION)
    finally:
        engine.dispose()


def upgrade(settings: Settings, *, agent: str) -> UpgradeResult:
    """Migrate to the latest revision (idempotent) and create the default pepper if none is set."""
    from cpms_admin.security.pepper import DEFAULT_PEPPER_FILE, create_pepper_file

    engine = make_engine(settings.database_url, must_exist=False)
    try:
        before = current_revision(engine)
        upgrade_schema(engine)
        if before != HEAD_REVISION:
            with session_scope(engine) as session:
                audit.record(
                    session, agent=agent, action="db.upgrade", before=before, after=HEAD_REVISION
                )
                session.commit()
    finally:
        engine.dispose()
    pepper_created = None
    if not settings.pepper and not settings.pepper_file and not DEFAULT_PEPPER_FILE.exists():
        create_pepper_file(DEFAULT_PEPPER_FILE)
        pepper_created = DEFAULT_PEPPER_FILE
    return UpgradeResult(before=before, after=HEAD_REVISION, pepper_created=pepper_created)
