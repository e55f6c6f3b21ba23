"""`letters batch` as the print house and the members see its result: the batch directory, the
manifest and index against the PDFs (read back with pypdf), codes that work on the portal,
moot letters cancelled with their reason, and the options (--dry-run, --limit, --duplex)."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from cpms_admin.clock import system_clock
from cpms_admin.credentials import accounts
from cpms_admin.french import PARIS, paris_time
from cpms_admin.letters import guard as batch_guard
from cpms_admin.letters.batch import BatchHooks, BatchOptions, run_batch
from cpms_admin.letters.claim import claim_letters
from cpms_admin.letters.guard import AdvisoryGuard
from cpms_admin.letters.voiding import SUPERSEDED_WHILE_PRINTING
from cpms_admin.models import AuditEvent, Letter, LetterBatch, Member, SecurityCode, pk
from cpms_admin.settings import Settings
from tests.cred_helpers import email_code, give_pin, set_pin
from tests.factories import snapshot
from tests.harness import Cli, FakeClock
from tests.letters_helpers import (
    batch,
    check_batch_dir,
    code_works,
    letter_text,
    letters_by_status,
    manifests,
    printed_code,
    queue_members,
    render_fails,
)


def test_a_batch_prints_every_pending_letter_once_in_a_private_directory(
    cli: Cli, session: Session, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    queued = queue_members(session, 7)
    out = tmp_path / "print"
    summary = batch(cli, out, "--chunk-size", "3")
    assert (summary["printed"], len(summary["files"]), summary["cancelled"]) == (7, 3, 0)
    [(directory, manifest)] = manifests(out)
    assert str(directory) == summary["directory"]
    for key in ("batch_id", "created_at", "letters", "files"):  # the shape of docs/scripting.md
        assert summary[key] == manifest[key]
    check_batch_dir(directory, manifest)
    assert summary["pages"] == sum(f["pages"] for f in manifest["files"])
    session.expire_all()
    letters = session.exec(select(Letter).order_by(col(Letter.id))).all()
    assert [le["letter_id"] for le in manifest["letters"]] == [pk(le) for le in letters]
    assert {le.status for le in letters} == {"printed"}
    assert {le.batch_id for le in letters} == {summary["batch_id"]}
    row = session.get(LetterBatch, summary["batch_id"])
    assert row is not None and (row.status, row.letter_count) == ("completed", 7)
    assert json.loads(row.manifest or "{}") == manifest
    first = manifest["letters"][0]
    assert (
        first["nir_masked"] == f"{queued[0].nir[0]} {queued[0].nir[1:3]} •• •• ••• ••• "
        f"{queued[0].nir[13:]}"
    )
    text = letter_text(directory, first)
    assert "Paris, le 23 novembre 2026" in text and "23 décembre 2026" in text
    # The code is stored hashed, tied to the letter, and works on the portal exactly once.
    code = printed_code(text)
    stored = session.exec(
        select(SecurityCode).where(SecurityCode.letter_id == first["letter_id"])
    ).one()
    assert (stored.channel, stored.purpose) == ("post", "first_login")
    assert paris_time(stored.expires_at) == datetime(2026, 12, 24, tzinfo=PARIS)  # all of the 23rd
    assert code not in stored.code_hash
    assert code_works(session, settings, clock, first["letter_id"], code)
    assert not code_works(session, settings, clock, first["letter_id"], code)
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "letters.batch")).one()
    assert json.loads(event.details)["printed"] == 7
    assert batch(cli, out)["batch_id"] is None  # nothing left: exit 0, no new directory
    assert len(manifests(out)) == 1


def test_moot_letters_are_cancelled_with_their_reason(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    has_pin, superseded, newer_code, closed, _fine = queue_members(session, 5)
    give_pin(session, settings, has_pin)
    give_pin(session, settings, superseded)  # then reset: their welcome letter gives way
    accounts.reset_pin(
        session,
        nir=superseded.nir,
        channel="post",
        agent="agent.test",
        reason="forgot",
        settings=settings,
        clock=system_clock,
    )
    email_code(session, settings, system_clock, newer_code)  # after its letter was queued
    # Closing cancels pending letters, but not one claimed by a run that then died and put it
    # back in the queue: the batch checks again.
    session.exec(
        update(Member)
        .where(col(Member.id) == pk(closed))  # type: ignore[call-overload]
        .values(status="closed")
    )
    session.commit()
    summary = batch(cli, tmp_path / "out")
    assert summary["cancelled_by_reason"] == {
        "has_pin": 1,
        "superseded": 1,
        "newer_code": 1,
        "member_closed": 1,
    }
    assert summary["printed"] == 2  # `fine`'s welcome and `superseded`'s reset letter
    session.expire_all()
    reasons = {
        le.member_id: (le.kind, le.status, le.status_reason)
        for le in session.exec(select(Letter).where(Letter.status == "cancelled"))
    }
    assert reasons[pk(has_pin)] == (
        "welcome",
        "cancelled",
        "welcome letter, but the member already has a PIN",
    )
    assert reasons[pk(closed)] == ("welcome", "cancelled", "member closed")
    assert reasons[pk(newer_code)][2].startswith("a newer code was issued after it was queued")
    reset = session.exec(
        select(Letter).where(Letter.member_id == pk(superseded), Letter.kind == "pin_reset")
    ).one()
    assert reasons[pk(superseded)][2] == f"superseded by letter #{reset.id}"
    assert reset.status == "printed"
    [(_, manifest)] = manifests(tmp_path / "out")
    assert {le["letter_id"] for le in manifest["letters"]} == {
        pk(le) for le in session.exec(select(Letter).where(Letter.status == "printed"))
    }
    cancels = session.exec(select(AuditEvent).where(AuditEvent.action == "letter.cancel")).all()
    assert {e.member_id for e in cancels} == {
        pk(has_pin),
        pk(superseded),
        pk(newer_code),
        pk(closed),
    }
    human = cli("letters", "batch", "--out", str(tmp_path / "again"))
    assert (human.exit_code, human.stdout, human.stderr) == (0, "", "")  # off a terminal


def test_a_run_whose_letters_are_all_moot_cancels_them_and_leaves_no_batch(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    """The claim takes the letters for a new batch in one UPDATE, then cancels the moot ones:
    when none is left to print, neither the batch nor a letter's link to it remains."""
    members = queue_members(session, 2)
    for member in members:
        give_pin(session, settings, member)
    summary = batch(cli, tmp_path / "out")
    assert (summary["batch_id"], summary["printed"]) == (None, 0)
    assert summary["cancelled_by_reason"] == {"has_pin": 2}
    session.expire_all()
    assert session.exec(select(LetterBatch)).all() == []
    letters = session.exec(select(Letter)).all()
    assert {(le.status, le.batch_id) for le in letters} == {("cancelled", None)}


def test_dry_run_counts_and_changes_nothing(
    cli: Cli, session: Session, settings: Settings, tmp_path: Path
) -> None:
    has_pin, *_ = queue_members(session, 4)
    give_pin(session, settings, has_pin)
    before = snapshot(session)
    result = cli("--json", "letters", "batch", "--out", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "dry_run": True,
        "pending": 4,
        "would_cancel": 1,
        "cancelled_by_reason": {"has_pin": 1},
        "would_print": 3,
    }
    limited = cli("letters", "batch", "--out", str(tmp_path / "out"), "--dry-run", "--limit", "2")
    assert "Would print: 1" in limited.stdout  # the oldest two, one of them moot
    assert snapshot(session) == before
    assert not (tmp_path / "out").exists()


def test_limit_takes_the_oldest_letters_and_the_next_run_the_rest(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 5)
    first = batch(cli, tmp_path / "out", "--limit", "3")
    second = batch(cli, tmp_path / "out", "--limit", "3")
    ids = {
        m["batch_id"]: [le["letter_id"] for le in m["letters"]]
        for _, m in manifests(tmp_path / "out")
    }
    assert (first["printed"], second["printed"]) == (3, 2)
    assert ids[first["batch_id"]] == sorted(ids[first["batch_id"]])
    assert max(ids[first["batch_id"]]) < min(ids[second["batch_id"]])
    assert letters_by_status(session) == {"printed": set(ids[1]) | set(ids[2])}


def test_duplex_gives_each_letter_an_even_number_of_pages(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 3)
    summary = batch(cli, tmp_path / "out", "--duplex")
    [(directory, manifest)] = manifests(tmp_path / "out")
    check_batch_dir(directory, manifest)
    assert all(le["page_count"] % 2 == 0 for le in manifest["letters"])
    assert summary["pages"] == 6


def test_a_letter_that_cannot_be_laid_out_fails_alone(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    broken, *others = queue_members(session, 3)
    session.exec(
        update(Member)
        .where(col(Member.id) == pk(broken))  # type: ignore[call-overload]
        .values(last_name="Vandenberghe-Oudenaarde De La Rochefoucauld")
    )
    session.commit()
    result = cli("--json", "letters", "batch", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "Warning: 1 letter could not be printed: " in result.stderr
    assert (json.loads(result.stdout)["printed"], json.loads(result.stdout)["failed"]) == (2, 1)
    failed = session.exec(select(Letter).where(Letter.member_id == pk(broken))).one()
    session.refresh(failed)
    assert (failed.status, failed.batch_id) == ("failed", None)
    assert "address block is not AFNOR-sized" in (failed.status_reason or "")
    assert (
        session.exec(select(SecurityCode).where(SecurityCode.member_id == pk(broken))).all() == []
    )
    [(_, manifest)] = manifests(tmp_path / "out")
    assert {le["letter_id"] for le in manifest["letters"]} == {
        pk(le)
        for m in others
        for le in session.exec(select(Letter).where(Letter.member_id == pk(m)))
    }


def test_a_rendering_error_abandons_the_batch_and_keeps_the_letters_queued(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_members(session, 2)

    failing = render_fails("font subsetting failed near code 123456")
    monkeypatch.setattr("cpms_admin.letters.pool.render_chunks", failing)
    result = cli("letters", "batch", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [  # said once, in the error
        "Error: batch 1 failed while rendering (RuntimeError: font subsetting failed near code "
        "••••••); it was abandoned and 2 letters went back in the queue"
    ]
    assert letters_by_status(session).keys() == {"pending"}
    row = session.get(LetterBatch, 1)
    assert row is not None and row.status == "abandoned"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_batch_it_could_not_abandon_says_so_and_the_next_run_settles_it(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_members(session, 2)

    def unreachable(*_args: object, **_kwargs: object) -> int:
        raise OSError("database unreachable")

    with monkeypatch.context() as patched:
        patched.setattr("cpms_admin.letters.pool.render_chunks", render_fails("out of memory"))
        patched.setattr("cpms_admin.letters.batch.abandon", unreachable)
        result = cli("letters", "batch", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [  # not "it was abandoned": it was not
        "Error: batch 1 failed while rendering (RuntimeError: out of memory); it could not be "
        "abandoned now (OSError: database unreachable); the next run will"
    ]
    assert letters_by_status(session).keys() == {"claimed"}
    assert batch(cli, tmp_path / "out")["printed"] == 2
    session.rollback()  # a fresh read
    row = session.get(LetterBatch, 1)
    assert row is not None and row.status == "abandoned"


def test_not_ready_is_exit_5_and_claims_nothing(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_members(session, 1)
    before = snapshot(session)
    no_pepper = cli.with_settings(pepper=None, pepper_file=str(tmp_path / "missing"))
    result = no_pepper("letters", "batch", "--out", str(tmp_path / "out"))
    assert (result.exit_code, result.stderr.startswith("Error: no pepper: ")) == (
        5,
        True,
    )
    monkeypatch.setattr("cpms_admin.letters.pdf.render.letters_templates_dir", lambda: tmp_path)
    result = cli("letters", "batch", "--out", str(tmp_path / "out"))
    assert result.exit_code == 5
    assert result.stderr.startswith("Error: letter stylesheet missing")
    assert snapshot(session) == before


def test_a_second_run_on_sqlite_is_refused_while_the_lock_is_held(
    cli: Cli, settings: Settings, session: Session, engine: Engine, tmp_path: Path
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL runs share the queue instead of locking it")
    queue_members(session, 1)
    holder = batch_guard.open_guard(engine, settings.database_url)
    try:
        result = cli("letters", "batch", "--out", str(tmp_path / "out"))
    finally:
        holder.close()
    assert result.exit_code == 4
    assert result.stderr == (
        f"Error: another letters batch is running (lock "
        f"{settings.database_url.removeprefix('sqlite:///')}.batch-lock)\n"
    )
    assert not (tmp_path / "out").exists()  # a refused run leaves no folder behind
    assert batch(cli, tmp_path / "out")["printed"] == 1


def test_postgresql_claims_skip_letters_another_worker_is_claiming(
    session: Session, engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's")
    queue_members(session, 4)
    ids = sorted(pk(le) for le in session.exec(select(Letter)))
    other = Session(engine)
    other.exec(select(Letter).where(col(Letter.id).in_(ids[:2])).with_for_update()).all()
    guard = AdvisoryGuard(engine)
    try:
        claim = claim_letters(
            session,
            guard=guard,
            owner="test",
            out_dir="/nowhere",
            limit=None,
            agent="agent.test",
            now=datetime.now(UTC),
        )
    finally:
        other.close()
        guard.close()
    assert claim.claimed == 2
    session.expire_all()
    taken = {pk(le) for le in session.exec(select(Letter).where(Letter.batch_id == claim.batch_id))}
    assert taken == set(ids[2:])


def test_a_member_whose_letter_another_run_prints_waits_for_the_next_run(
    session: Session, settings: Settings, engine: Engine
) -> None:
    """Two letters of one member printed at once would each store a code, and only the
    second would work: the newer letter waits while the older one is being printed."""
    (member,) = queue_members(session, 1)
    guard = batch_guard.open_guard(engine, settings.database_url)

    def claim(owner: str) -> int:
        done = claim_letters(session, guard=guard, owner=owner, out_dir="/nowhere", limit=None,
                             agent="agent.test", now=datetime.now(UTC))  # fmt: skip
        assert done.batch_id is not None
        return done.batch_id

    try:
        first = claim("first run")
        accounts.issue_member_code(session, nir=member.nir, channel="post", agent="agent.test",
                                   settings=settings, clock=system_clock)  # fmt: skip
        (other,) = queue_members(session, 1)
        second = claim("second run")
    finally:
        guard.close()
    session.expire_all()
    taken = {(le.member_id, le.status, le.batch_id) for le in session.exec(select(Letter))}
    assert taken == {
        (pk(member), "claimed", first),
        (pk(member), "pending", None),
        (pk(other), "claimed", second),
    }


def test_an_out_that_is_a_file_is_exit_2_and_claims_nothing(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    queue_members(session, 1)
    before = snapshot(session)
    (tmp_path / "out").write_text("")
    result = cli("letters", "batch", "--out", str(tmp_path / "out"))
    assert (result.exit_code, "is not a directory" in result.stderr) == (2, True)
    assert snapshot(session) == before


def batch_with_code_mailed_mid_render(
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    out: Path,
    member: Member,
    *,
    expire_it: bool = False,
    logged: list[str] | None = None,
) -> tuple[str, str, int]:
    """Run the batch; while it renders, e-mail the member a code (and let it expire, if asked).
    The e-mailed code, the code printed in the member's letter, and the letter's id; the
    run's log lines in `logged`."""
    mailed: list[str] = []

    def mid_render(done: int, _total: int) -> None:
        if not done:  # the bar's start, at the claim: wait for a letter to be rendered
            return
        clock.advance(minutes=1)
        with Session(engine, expire_on_commit=False) as other:
            mailed.append(email_code(other, settings, clock, member))
        if expire_it:
            clock.advance(minutes=settings.code_email_ttl_minutes + 1)

    summary = run_batch(
        engine=engine,
        settings=settings,
        agent="agent.test",
        clock=clock,
        options=BatchOptions(out=out),
        hooks=BatchHooks(progress=mid_render, log=(logged if logged is not None else []).append),
    )
    assert (summary.printed, len(mailed)) == (1, 1)
    [(directory, manifest)] = manifests(out)
    [entry] = manifest["letters"]
    return mailed[0], printed_code(letter_text(directory, entry)), entry["letter_id"]


def test_a_code_the_member_gets_while_the_batch_prints_their_letter_stays_live(
    session: Session, settings: Settings, engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    """A code e-mailed while the member's letter is being printed is newer than the printed
    one: it must keep working once the batch commits (the printed code is the one revoked)."""
    (member,) = queue_members(session, 1, email="jeanne@example.org")
    logged: list[str] = []
    mailed, printed, letter_id = batch_with_code_mailed_mid_render(
        engine, settings, clock, tmp_path / "out", member, logged=logged
    )
    assert not code_works(session, settings, clock, letter_id, printed)
    assert set_pin(session, settings, clock, member.nir, mailed).ok
    letter = session.get(Letter, letter_id)
    assert letter is not None
    assert (letter.status, letter.status_reason) == ("printed", SUPERSEDED_WHILE_PRINTING)
    # Its code will never work: the print house is asked to pull it, as for the other cases.
    pull = f"{SUPERSEDED_WHILE_PRINTING}; pull it from the print run"
    [(_, manifest)] = manifests(tmp_path / "out")
    assert manifest["pull"] == [{"letter_id": letter_id, "reason": pull}]
    assert logged == [f"letter #{letter_id}: {pull}"]


def test_an_e_mailed_code_that_expired_before_the_commit_leaves_the_printed_one_live(
    session: Session, settings: Settings, engine: Engine, clock: FakeClock, tmp_path: Path
) -> None:
    (member,) = queue_members(session, 1, email="jeanne@example.org")
    _, printed, letter_id = batch_with_code_mailed_mid_render(
        engine, settings, clock, tmp_path / "out", member, expire_it=True
    )
    assert code_works(session, settings, clock, letter_id, printed)
