"""The database's peppers: the first one, recorded by `db upgrade`; rotation; what each one
still keys.

`pepper rotate` appends a new pepper to the pepper file (`<id>:<secret>`, the highest id is
current) and records its fingerprint, in that order: a rotation interrupted between the two
is finished by running it again. New hashes use the new pepper; every hash names the pepper
that made it, so old PIN hashes keep working and are re-hashed at the member's next login,
and live codes work until they expire. An old pepper's line can be deleted from the file once
`pepper status` says nothing uses it any more: no PIN hash, no live code, and no audit event
it sealed (the chain's key is derived from the pepper; see docs/audit.md).
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, inspect, not_, or_, update
from sqlmodel import Session, col, select

from cpms_admin import audit
from cpms_admin.audit_chain.seal import use_keys
from cpms_admin.clock import Clock
from cpms_admin.credentials.codes import live_at
from cpms_admin.credentials.legacy import LEGACY_PREFIX, fits_sealed, seal_legacy_hash
from cpms_admin.db import PEPPER_RUN, one_run, transaction
from cpms_admin.errors import NotReady
from cpms_admin.faults import failpoint
from cpms_admin.models import Account, AuditEvent, PepperKey, SecurityCode, UnknownLogin
from cpms_admin.pepper import (
    Peppers,
    checked_peppers,
    create_pepper_file,
    fingerprint,
    new_secret,
    pepper_file_path,
    pepper_given,
    read_peppers,
    write_pepper_file,
)
from cpms_admin.settings import Settings, written_as
from cpms_admin.vocabulary import AuditAction

UNSEALED = LEGACY_PREFIX + "$"  # an imported hash stored as it came (before 3 December)


@dataclass(frozen=True)
class PepperUse:
    """What pepper `key_id` still keys: PIN hashes, live codes, the audit events its key
    sealed (`audit verify` needs it for them until they are archived), and unknown NIRs'
    failure counters not moved to the current pepper yet (without it they would start
    afresh, where a member's stay)."""

    key_id: int
    current: bool
    pin_hashes: int
    live_codes: int
    audit_events: int = 0
    unknown_nir_counters: int = 0

    @property
    def removable(self) -> bool:
        """Its line can go from the pepper file: nothing would need it any more."""
        keyed = (self.pin_hashes, self.live_codes, self.audit_events, self.unknown_nir_counters)
        return not self.current and not any(keyed)

    def as_json(self) -> dict[str, object]:
        return {
            "pepper": self.key_id,
            "current": self.current,
            "pin_hashes": self.pin_hashes,
            "live_codes": self.live_codes,
            "audit_events": self.audit_events,
            "unknown_nir_counters": self.unknown_nir_counters,
            "removable": self.removable,
        }


@dataclass(frozen=True)
class Rotation:
    key_id: int
    path: Path
    finished_interrupted: bool  # the new pepper was in the file already, now recorded

    def as_json(self) -> dict[str, object]:
        """`pepper rotate --json`."""
        return {
            "pepper": self.key_id,
            "file": str(self.path),
            "finished_interrupted": self.finished_interrupted,
        }


def _recorded(session: Session, *, lock: bool = False) -> dict[int, str]:
    query = select(PepperKey)
    if lock:
        query = query.with_for_update()
    return {row.id: row.fingerprint for row in session.exec(query)}


def _record(session: Session, peppers: Peppers, key_ids: list[int], now: datetime) -> None:
    for key_id in key_ids:
        session.add(
            PepperKey(id=key_id, fingerprint=fingerprint(peppers.get(key_id)), created_at=now)
        )


def holds_hashes(session: Session) -> bool:
    """Whether any PIN or code was hashed with a pepper (or, imported, sealed with one:
    legacy hashes stored as they came before 3 December were not)."""
    pin = select(Account.member_id).where(
        col(Account.pin_hash).is_not(None), not_(col(Account.pin_hash).startswith(UNSEALED))
    )
    return (
        session.exec(pin.limit(1)).first() is not None
        or session.exec(select(SecurityCode.id).limit(1)).first() is not None
    )


def check_no_pepper_needed(session: Session, settings: Settings) -> None:
    """Before migrating an existing database: NotReady, as `settle_pepper` would refuse after
    the migrations, when no pepper is at hand and the database recorded one or holds hashes.
    Read on the schema as it is (older ones have no record of peppers), so that the refusal
    changes nothing."""
    if pepper_given(settings):
        return
    recorded = inspect(session.connection()).has_table(PepperKey.__tablename__) and bool(
        _recorded(session)
    )
    _no_pepper_needed(session, settings, recorded=recorded)


def check_pepper_folder(settings: Settings) -> None:
    """Before `db upgrade` makes a new pepper file without `--create-dirs`: NotReady when the
    folder CPMS_PEPPER_FILE (or pepper_file in the config file) names does not exist, as for
    a SQLite file's folder (`db.make_engine`): a typo there must not make a folder and a
    pepper nobody will look for. The default file beside a SQLite database is in the
    database's folder, checked with it."""
    if pepper_given(settings) or not settings.pepper_file:
        return
    folder = Path(settings.pepper_file).parent
    try:
        missing = not folder.is_dir()
    except OSError:  # a folder above it this user cannot open: writing there says so
        return
    if missing:
        raise NotReady(
            f"folder {folder} does not exist: check {written_as('pepper_file')}, or run "
            "cpms-admin db upgrade --create-dirs"
        )


def _no_pepper_needed(session: Session, settings: Settings, *, recorded: bool) -> Path:
    """Where a new pepper file would go; NotReady when the database has a pepper already
    (`recorded`, or hashes made with one): a new one would make every PIN and code fail."""
    path = pepper_file_path(settings)
    assert path is not None  # a pepper in CPMS_PEPPER is given
    if recorded or holds_hashes(session):
        held = "recorded a pepper" if recorded else "holds hashes made with a pepper"
        raise NotReady(
            f"no pepper at {path}, but this database {held}: restore its pepper file "
            "there (or point CPMS_PEPPER_FILE at it). A new pepper would make every PIN "
            "and code fail, so none is made"
        )
    return path


def settle_pepper(
    session: Session, *, settings: Settings, agent: str, now: datetime, create_dirs: bool = False
) -> Path | None:
    """At `db upgrade`: check the pepper at hand against the database's record, record it if
    the database has none yet (a new database, or one from before fingerprints), or create one
    for a database that holds no hash (its folder too if `create_dirs`: see
    `check_pepper_folder`). Never a second pepper for a database that has one: NotReady,
    naming the file. The path of a pepper file created, else None. The session seals its
    audit events with these peppers from then on."""
    with transaction(session):
        recorded = _recorded(session, lock=True)
        if pepper_given(settings):
            peppers = read_peppers(settings)
            if recorded:
                # A rotation's pepper not recorded yet is the rotation's to record, not this.
                use_keys(session, checked_peppers(peppers, recorded))
                return None
            created = None
        else:
            path = _no_pepper_needed(session, settings, recorded=bool(recorded))
            peppers = create_pepper_file(path, make_folder=create_dirs)
            created = path
        _record(session, peppers, sorted(peppers.secrets), now)
        use_keys(session, peppers)  # recorded in this transaction: the engine's would refuse
        audit.record(
            session,
            agent=agent,
            action=AuditAction.pepper_record,
            at=now,
            peppers=sorted(peppers.secrets),
            created=str(created) if created else None,
        )
    return created


def rotate(session: Session, *, settings: Settings, agent: str, clock: Clock) -> Rotation:
    """Add a new current pepper: appended to the pepper file first, then recorded with its
    audit row (meanwhile the other commands leave it out: `load_peppers`). Run again after an
    interruption between the two, it records the one added. One rotation at a time (Conflict,
    exit 4): two at once read the same file and would write the same new id, the second
    replacing the first's pepper after the first recorded it."""
    path = pepper_file_path(settings)
    if path is None:
        raise NotReady(
            "pepper rotate needs the peppers in a file: move CPMS_PEPPER's value into a file "
            "(mode 0600), set CPMS_PEPPER_FILE to it and unset CPMS_PEPPER, then run it again"
        )
    with one_run(session, PEPPER_RUN):
        return _rotate(session, path, settings=settings, agent=agent, clock=clock)


def _rotate(
    session: Session, path: Path, *, settings: Settings, agent: str, clock: Clock
) -> Rotation:
    """Under the run lock, so the file and the record read here stay as they are: the file
    is written outside any transaction (no write lock held while it is synced), then the
    pepper recorded with its audit row."""
    peppers = read_peppers(settings)
    with transaction(session):
        recorded = _recorded(session)
    pending = checked_peppers(peppers, recorded).unrecorded
    finishing = pending is not None
    if pending is not None:  # the file has the new pepper already: the others are checked
        key_id = pending
    else:
        key_id = max(recorded) + 1
        lines = {k: v.decode("utf-8") for k, v in peppers.secrets.items()}
        write_pepper_file(path, {**lines, key_id: new_secret()})
        failpoint("pepper.written")  # the file holds it; the database does not, yet
        peppers = read_peppers(settings)
    with transaction(session):
        now = clock()
        _record(session, peppers, [key_id], now)
        use_keys(session, peppers)  # the new pepper seals from now on, this event first
        audit.record(
            session,
            agent=agent,
            action=AuditAction.pepper_rotate,
            at=now,
            pepper=key_id,
            file=str(path),
            finished_interrupted=finishing,
        )
    return Rotation(key_id=key_id, path=path, finished_interrupted=finishing)


def usage(session: Session, *, now: datetime) -> list[PepperUse]:
    """For each recorded pepper: what it keys (PepperUse)."""
    recorded = sorted(_recorded(session))
    current = max(recorded, default=0)
    sealed = dict(
        session.exec(
            select(AuditEvent.key_id, func.count())
            .where(col(AuditEvent.key_id).is_not(None))
            .group_by(col(AuditEvent.key_id))
        ).all()
    )
    found = []
    for key_id in recorded:
        if key_id == 1:  # untagged: argon2 hashes and codes made before any rotation
            pins = col(Account.pin_hash).startswith("$argon2")
            code = not_(col(SecurityCode.code_hash).startswith("k"))
            # and unknown NIRs' keys (0018 tagged those of a later pepper current then)
            unknown = not_(col(UnknownLogin.subject).startswith("k"))
        else:
            pins = col(Account.pin_hash).startswith(f"k{key_id}:")
            code = col(SecurityCode.code_hash).startswith(f"k{key_id}$")
            unknown = col(UnknownLogin.subject).startswith(f"k{key_id}$")
        # Imported hashes, sealed with the pepper that was current (always tagged).
        pins = or_(pins, col(Account.pin_hash).startswith(f"legacy:k{key_id}:"))
        pin_count = session.exec(select(func.count()).select_from(Account).where(pins)).one()
        live = session.exec(
            select(func.count())
            .select_from(SecurityCode)
            .where(
                code,
                live_at(now),
            )
        ).one()
        counters = session.exec(select(func.count()).select_from(UnknownLogin).where(unknown)).one()
        found.append(
            PepperUse(
                key_id,
                key_id == current,
                int(pin_count),
                int(live),
                sealed.get(key_id, 0),
                int(counters),
            )
        )
    session.rollback()
    return found


_SEAL_BATCH = 1000


def seal_unsealed_hashes(session: Session, *, peppers: Peppers, agent: str, now: datetime) -> int:
    """At `db upgrade`: seal with the current pepper the imported hashes stored as they came
    (`credentials.legacy`), a batch per transaction, audited as a bulk run (an event per
    member). A hash a login replaced meanwhile is left to it; one too long to store sealed
    stays as it is (it still verifies). Returns how many were sealed."""
    run = audit.RunAudit(agent=agent, action=AuditAction.pins_seal_imported, at=now)
    sealed, after = 0, -1
    while True:
        with transaction(session):
            rows = session.exec(
                select(Account.member_id, Account.pin_hash)
                .where(col(Account.pin_hash).startswith(UNSEALED), col(Account.member_id) > after)
                .order_by(col(Account.member_id))
                .limit(_SEAL_BATCH)
            ).all()
            if not rows:
                if run.run_id is not None:
                    run.finish(session, counts={"sealed": sealed}, outcome="ok")
                return sealed
            after = rows[-1][0]
            done = [
                member_id
                for member_id, stored in rows
                if stored and _seal(session, member_id=member_id, stored=stored, peppers=peppers)
            ]
            run.record_members(session, done, change="pin_hash_sealed")
            sealed += len(done)


def _seal(session: Session, *, member_id: int, stored: str, peppers: Peppers) -> bool:
    value = stored.removeprefix(LEGACY_PREFIX)
    if not fits_sealed(value):
        return False
    return bool(
        session.exec(
            update(Account)
            .where(col(Account.member_id) == member_id, col(Account.pin_hash) == stored)
            .values(pin_hash=seal_legacy_hash(value, peppers))
        ).rowcount
    )
