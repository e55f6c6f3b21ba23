"""Every audited action, run as an agent or the portal runs it, leaves details that are plain
JSON values of the right types: ids as numbers, lists of them as lists, words as strings.
Never a database row, an enum or a moment turned into its repr (`"letters_cancelled":
["(7,)"]` was one)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from cpms_admin.audit import record
from cpms_admin.audit_chain import use_keys
from cpms_admin.models import Account, Member, pk
from cpms_admin.pepper import read_peppers
from cpms_admin.privacy.dossier_pdf import DETAILS, LABELS, french_reason
from cpms_admin.vocabulary import RetentionCategory
from tests.audit_helpers import audit_of, documented_actions
from tests.cred_helpers import NEW_PIN, PIN, mailed_codes
from tests.factories import make_member, make_nir
from tests.harness import TEST_PEPPER, Cli, FakeClock
from tests.import_helpers import person, write_csv
from tests.letters_helpers import printed_codes
from tests.mail_helpers import free_port

INT, STR, BOOL, NULL = "int", "str", "bool", "null"
INTS, STRS = "list[int]", "list[str]"
ATTEMPT = {"failures": {INT}, "hard_locked": {BOOL}}  # a wrong PIN or code, counted
DELIVERY = {"channel": {STR}, "purpose": {STR}, "expires_at": {STR, NULL},
            "letter_id": {INT, NULL}, "letter_reused": {BOOL}}  # fmt: skip
PURGE = {"rule": {STR}, "before": {STR}, "count": {INT}, "oldest": {STR, NULL},
         "skipped": {"list[]", STRS}, "error": {STR}}  # fmt: skip
# What each action's details hold: key -> the JSON kinds its value may take.
SCHEMAS: dict[str, dict[str, set[str]]] = {
    "member.add": {"welcome_letter_id": {INT, NULL}},
    "member.update": {"changed": {STRS}, "undeliverable_cleared": {BOOL}},
    "member.close": {"codes_revoked": {INT}, "letters_cancelled": {INTS}},
    "account.unlock": {"state_before": {STR}, "failed_attempts_before": {INT}},
    "code.issue": DELIVERY,
    "pin.reset": {**DELIVERY, "had_pin": {BOOL}, "revoked_codes": {INT}},
    "code.revoke": {"code_id": {INT}, "revoked": {BOOL}, "error": {STR}},
    "portal.login": {**ATTEMPT, "block": {STR}, "rehashed": {BOOL},
                     "imported_pin_revoked": {STR}},
    "portal.set_pin": {**ATTEMPT, "block": {STR}, "how": {STR}, "code_id": {INT},
                       "lifted_lockout": {BOOL}},
    "portal.change_pin": {**ATTEMPT, "block": {STR}, "how": {STR}, "rehashed": {BOOL}},
    "portal.accept_terms": {**ATTEMPT, "block": {STR}, "version": {STR}},
    "portal.request_code": {"nir": {STR}},
    "portal.send_code": DELIVERY,
    "letter.cancel": {"letter_id": {INT}, "kind": {STR}},
    "letter.failed": {"letter_id": {INT}, "batch_id": {INT}},
    "letter.void": {"letter_id": {INT}, "queued_again": {INT, NULL}},
    "letters.batch": {"batch_id": {INT}, "printed": {INT}, "failed": {INT}, "files": {INT},
                      "pages": {INT}, "superseded": {INTS, "list[]"}, "voided": {INTS, "list[]"},
                      "queued_again": {"object"}},
    "letters.batch_abandoned": {"batch_id": {INT}, "released": {INT}},
    "agent.add": {"name": {STR}, "role": {STR}, "before": {STR, NULL}},
    "agent.disable": {"name": {STR}},
    # A run's event (its facts: `welcome_letters` the option) and its closing event (its
    # counts: `welcome_letters` those queued, and `run` the id of the run's event).
    "members.import": {"created": {INT}, "updated": {INT}, "skipped": {INT},
                       "invalid": {INT}, "welcome_letters": {INT, BOOL}, "file": {STR},
                       "letters_voided": {INT}, "letters_queued_again": {INT},
                       "emailed_codes_revoked": {INT},
                       "format": {STR}, "on_conflict": {STR}, "run": {INT}},
    "members.import.member": {"change": {STR}, "run": {INT}},
    "members.export": {"count": {INT}, "format": {STR}, "status": {STR, NULL},
                       "destination": {STR}, "excel": {BOOL}, "run": {INT}},
    "code.campaign": {"channel": {STR}, "never_logged_in": {BOOL}, "no_pin": {BOOL},
                      "from_file": {INT, NULL}, "imported_since": {STR, NULL},
                      "selected": {INT}, "letters": {INT}, "emails": {INT},
                      "already_pending": {INT}, "no_email": {INT}, "closed": {INT},
                      "unknown": {INT}, "undeliverable": {INT}, "wording": {STR},
                      "run": {INT}},
    "letter.returned": {"letter_id": {INT}, "returned_as": {STR}, "code_revoked": {BOOL},
                        "address_flagged": {BOOL}, "address_changed_since": {BOOL}},
    "code.campaign.member": {"change": {STR}, "run": {INT}},
    "mail.send": {"sent": {INT}, "retry": {INT}, "failed": {INT}, "cancelled": {INT},
                  "left": {INT}, "run": {INT}},
    "mail.send.member": {"change": {STR}, "run": {INT}},
    "pepper.rotate": {"pepper": {INT}, "file": {STR}, "finished_interrupted": {BOOL}},
    "db.upgrade": {"before": {STR, NULL}, "after": {STR}, "events_sealed": {INT}},
    "pepper.record": {"peppers": {INTS}, "created": {STR, NULL}},
    "pins.seal_imported": {"sealed": {INT}, "run": {INT}},
    "pins.seal_imported.member": {"change": {STR}, "run": {INT}},
    "member.dossier": {"format": {STR}},
    **{f"purge.{name}": PURGE for name in RetentionCategory},
    "purge.batch_files": {**PURGE, "batch_ids": {INTS, "list[]"}},
    "purge.audit_events": {**PURGE, "archive_dir": {STR}},
    # Batched: its event (the members found), then a closing event (how many went, `run`).
    "purge.closed_members": {**PURGE, "run": {INT}},
    "purge.closed_members.member": {"change": {STR}, "run": {INT}},
    "audit.archive": {"before": {STR}, "events": {INT}, "through_seq": {INT},
                      "anchor_hash": {STR}, "file": {STR}},
}  # fmt: skip


def kind(value: Any) -> str:
    """The JSON kind of a value read back: `int`, `str`, `list[int]`..."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, list):
        inner = {kind(item) for item in value}
        return f"list[{'|'.join(sorted(inner))}]"
    return {int: INT, str: STR, float: "float", dict: "object"}[type(value)]


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return result


def all_events(cli: Cli) -> list[dict[str, Any]]:
    result = ok(cli("--json", "audit", "list", "--limit", "10000"))
    return list(reversed(json.loads(result.stdout)))


@pytest.fixture
def filed(cli: Cli, tmp_path: Path) -> Iterator[Cli]:
    """The test database's pepper in a file, so that `pepper rotate` can run too."""
    path = tmp_path / "pepper"
    path.write_text(f"{TEST_PEPPER}\n")
    path.chmod(0o600)
    yield cli.with_settings(pepper=None, pepper_file=str(path))


def test_every_audited_action_records_plain_json_details(
    filed: Cli,
    session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    new_login: str,
) -> None:
    cli = filed
    where = ["--street", "4 rue Sala", "--postcode", "69002", "--city", "Lyon"]
    # One member's story, by an agent and on the portal.
    nir = make_nir()
    ok(cli("member", "add", "--nir", nir, "--last-name", "Roux", "--first-name", "Léa",
           "--email", "lea.roux@example.fr", *where))  # fmt: skip
    ok(cli("member", "update", nir, "--city", "LYON", "--street", "5 rue Sala", "--reason", "x"))
    ok(cli("code", "issue", nir, "--channel", "email", "--reason", "x"))
    (code,) = mailed_codes(cli.settings)
    ok(cli("portal", "set-pin", nir, "--with", "code", input=f"{code}\n{PIN}\n{PIN}\n"))
    ok(cli("portal", "accept-terms", nir, input=f"{PIN}\n"))
    ok(cli("portal", "set-pin", nir, "--with", "pin", input=f"{PIN}\n{NEW_PIN}\n{NEW_PIN}\n"))
    for _ in range(4):  # wrong PINs, then one refused by the cool-down
        cli("portal", "login", nir, input="000001\n")
    ok(cli("account", "unlock", nir, "--reason", "called"))
    ok(cli("portal", "login", nir, input=f"{NEW_PIN}\n"))
    cli("portal", "set-pin", nir, "--with", "code", input=f"{code}\n{PIN}\n{PIN}\n")
    ok(cli("portal", "request-code", nir))
    ok(cli("portal", "request-code", make_nir()))  # no member's
    dead = cli.with_settings(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    assert dead("code", "issue", nir, "--channel", "email", "--reason", "x").exit_code == 1
    ok(cli("pin", "reset", nir, "--channel", "post", "--reason", "forgot"))
    # The night: a letter cancelled (a welcome letter, a PIN set since), one that cannot be
    # laid out, the others printed; then a run that fails and is abandoned.
    has_pin = make_member(session, welcome=True, email=None)
    ok(cli("portal", "request-code", has_pin.nir))
    broken = make_member(session, welcome=True, email=None)
    session.exec(
        update(Member)
        .where(col(Member.id) == pk(broken))  # type: ignore[call-overload]
        .values(last_name="Vandenberghe-Oudenaarde De La Rochefoucauld")
    )
    session.commit()
    summary = json.loads(ok(cli("--json", "letters", "batch", "--out", str(tmp_path / "o"))).stdout)
    for letter_code in printed_codes(summary).values():
        cli("portal", "set-pin", has_pin.nir, "--with", "code",
            input=f"{letter_code}\n{PIN}\n{PIN}\n")  # fmt: skip
    ok(cli("member", "update", nir, "--street", "6 rue Sala", "--reason", "moved"))  # void
    ok(cli("letters", "returned", str(summary["letters"][0]["letter_id"])))  # NPAI
    make_member(session, welcome=True, email=None)

    def explode(*_args: object, **_kwargs: object) -> Iterator[object]:
        raise RuntimeError("no fonts")
        yield  # pragma: no cover

    with monkeypatch.context() as patch:
        patch.setattr("cpms_admin.letters.pool.render_chunks", explode)
        assert cli("letters", "batch", "--out", str(tmp_path / "o")).exit_code == 1
    # Bulk runs and the rest.
    ok(cli("members", "import", str(write_csv(tmp_path / "in.csv", [person(900_001)]))))
    ok(cli("members", "export", "--out", str(tmp_path / "out.csv")))
    ok(cli("code", "campaign", "--no-pin", "--reason", "rentrée"))
    ok(cli("code", "campaign", "--no-pin", "--imported-since", "2026-01-01", "--reason", "x"))
    ok(cli("mail", "send"))
    session.exec(  # a PIN hash imported before 3 December, stored as it came
        update(Account)
        .where(col(Account.member_id) == pk(has_pin))  # type: ignore[call-overload]
        .values(pin_hash="legacy:" + bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(4)).decode())
    )
    session.commit()
    ok(cli("db", "upgrade"))  # seals it
    ok(cli("pepper", "rotate"))
    use_keys(session, read_peppers(cli.settings))  # the test's own writes: the new pepper
    to_close = make_member(session, welcome=True)
    shown = json.loads(ok(cli("--json", "member", "show", to_close.nir)).stdout)
    (letter_id,) = [letter["id"] for letter in shown["pending_letters"]]
    ok(cli("member", "close", to_close.nir, "--reason", "left"))
    (closed,) = [e for e in audit_of(cli, to_close.nir) if e["action"] == "member.close"]
    assert closed["details"] == {"codes_revoked": 0, "letters_cancelled": [letter_id]}
    ok(cli("member", "dossier", nir, "--out", str(tmp_path / "dossier.json")))
    ok(cli("agent", "add", new_login, "--role", "support"))
    ok(cli("agent", "disable", new_login, "--reason", "left"))
    events = all_events(cli)
    # Long after: the closed member pseudonymised, the old events archived (purge's part).
    clock.advance(days=731)
    ok(cli("purge"))
    events += all_events(cli)  # purge's own events, the archive's among them
    # A new database's first events (its own file: the test database is upgraded already).
    new = cli.with_settings(database_url=f"sqlite:///{tmp_path / 'new.db'}", pepper_file=None)
    ok(new("db", "upgrade"))
    events += all_events(new)
    seen = {event["action"] for event in events}
    assert seen == set(SCHEMAS), set(SCHEMAS) ^ seen
    documented = documented_actions()  # docs/audit.md: every action, and whether it names a member
    assert set(SCHEMAS) == set(documented), set(SCHEMAS) ^ set(documented)
    for event in events:
        names_a_member = event["nir"] is not None
        assert names_a_member or documented[event["action"]] in ("no", "yes¹"), event
        assert not names_a_member or documented[event["action"]] != "no", event
    for event in (e for e in events if e["nir"] is not None):
        assert_reads_in_french(event)
    for event in events:
        schema = SCHEMAS[event["action"]]
        for key, value in event["details"].items():
            assert key in schema, (event["action"], key, value)
            assert kind(value) in schema[key], (event["action"], key, value)
    (since,) = [e for e in events if e["details"].get("imported_since")]
    assert since["details"]["imported_since"] == "2026-01-01T00:00:00+00:00"


# The reasons the story below types as an agent would: shown to the member as typed.
TYPED_REASONS = {"x", "called", "forgot", "moved", "left", "rentrée"}


def assert_reads_in_french(event: dict[str, Any]) -> None:
    """An event on a member, as their dossier words it: its action, outcome, each detail's
    name and each word of its values (docs/rules.md, right of access)."""
    assert event["action"] in LABELS["action"], event
    assert event["outcome"] in LABELS["outcome"], event
    if event["reason"] not in (None, *TYPED_REASONS):
        assert french_reason(event["reason"]) != event["reason"], event  # the program's words
    for key, value in event["details"].items():
        assert key in DETAILS, (event["action"], key)
        words = DETAILS[key][1]
        if words == "reason":  # a mail error: the server's words, framed in French
            assert french_reason(value) != value, (event["action"], key, value)
        if words in LABELS:
            for word in value if isinstance(value, list) else [value]:
                assert word in LABELS[words], (event["action"], key, word)


def test_a_detail_that_is_not_plain_json_is_refused(session: Session) -> None:
    member = make_member(session)
    row = session.execute(select(Member.id)).first()  # a Row, not its value
    with pytest.raises(TypeError, match="audit detail of type Row is not a JSON value"):
        record(session, agent="agent.test", action="account.unlock", member=member, ids=[row])
    session.rollback()
