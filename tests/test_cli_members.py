"""`member`, `audit` and `db` through the CLI: exit codes, messages, JSON shapes."""

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from cpms_admin.members.nir import format_nir
from cpms_admin.models import Member
from cpms_admin.settings import Settings
from tests.factories import make_member, make_nir, snapshot
from tests.harness import Cli

ADD = [
    "member",
    "add",
    "--last-name",
    "Dupont",
    "--first-name",
    "Jean",
    "--civility",
    "M",
    "--street",
    "12 rue de la Paix",
    "--postcode",
    "75002",
    "--city",
    "Paris",
]


def test_add_then_show_as_json(cli: Cli) -> None:
    nir = make_nir()
    spaced = f"{nir[0]} {nir[1:3]} {nir[3:5]} {nir[5:7]} {nir[7:10]} {nir[10:13]} {nir[13:]}"
    added = cli(*ADD, "--nir", spaced, "--email", "jean@example.com")
    assert added.exit_code == 0, added.output
    assert "enrolment letter queued" in added.stdout
    shown = cli("--json", "member", "show", nir)
    assert shown.exit_code == 0
    view = json.loads(shown.stdout)
    assert view["nir"] == nir
    assert view["address"]["lines"] == ["M Jean DUPONT", "12 RUE DE LA PAIX", "75002 PARIS"]
    assert view["account"]["state"] == "no_pin"
    assert [letter["kind"] for letter in view["pending_letters"]] == ["welcome"]


def test_human_show_groups_the_nir(cli: Cli, session: Session) -> None:
    member = make_member(session)
    result = cli("member", "show", member.nir)
    assert f"NIR {member.nir[0]} {member.nir[1:3]} {member.nir[3:5]}" in result.stdout
    assert "no_pin" in result.stdout


def test_a_nir_pasted_from_a_spreadsheet_is_found_or_its_damage_named(
    cli: Cli, session: Session
) -> None:
    """What an agent pastes from a spreadsheet's cell: its 15 digits written as a number are
    the member; a number that lost digits says so, as an import does."""
    member = make_member(session)
    found = cli("--json", "member", "show", f"{member.nir}.0")
    assert (found.exit_code, json.loads(found.stdout)["nir"]) == (0, member.nir)
    lost = cli("member", "show", f"{member.nir[0]},{member.nir[1:6]}E+14")
    assert lost.exit_code == 2
    assert "a spreadsheet turned it into a number written in scientific notation" in lost.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--nir", "185057800608492"], 2, "Error: invalid NIR '185057800608492': its 2-digit key"),
        (["--nir", "1850578006084"], 2, "must have 15 characters"),
    ],
)
def test_bad_nir_is_exit_2_with_reason(cli: Cli, args: list[str], code: int, message: str) -> None:
    result = cli(*ADD, *args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_refused_commands_leave_the_database_unchanged(cli: Cli, session: Session) -> None:
    member = make_member(session)
    before = snapshot(session)
    refusals = [
        (cli(*ADD, "--nir", member.nir), 4, "already exists"),
        (cli(*ADD, "--nir", make_nir(), "--email", "a@b.fr\r\nBcc: x@y.fr"), 2, "line break"),
        (cli(*ADD, "--nir", make_nir(), "--postcode", "7500"), 2, "5 digits"),
        (cli("member", "update", member.nir, "--street", "x" * 40), 2, "does not fit"),
        (cli("member", "update", member.nir, "--email", "a@b.fr", "--clear-email"), 2, "either"),
        # A script's `--email "$EMAIL"` with EMAIL unset: not a silent clear.
        (cli("member", "update", member.nir, "--email", " ", "--reason", "x"), 2, "--clear-email"),
        (cli("member", "update", make_nir(), "--city", "Lyon"), 3, "no member with NIR"),
        (cli("member", "close", make_nir(), "--reason", "x"), 3, "no member"),
        (cli("member", "close", member.nir, "--reason", " "), 2, "reason is required"),
    ]
    for result, code, message in refusals:
        assert (result.exit_code, message in result.stderr) == (code, True), result.output
    assert snapshot(session) == before


def test_unknown_member_is_exit_3(cli: Cli) -> None:
    result = cli("member", "show", make_nir())
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: no member with NIR")


def test_update_and_close_are_audited_with_agent_and_reason(cli: Cli, session: Session) -> None:
    member = make_member(session)
    assert (
        cli("member", "update", member.nir, "--clear-email", "--reason", "bounced").exit_code == 0
    )
    assert cli("member", "close", member.nir, "--reason", "décès").exit_code == 0
    events = json.loads(cli("--json", "audit", "list", "--nir", member.nir).stdout)
    assert [(e["action"], e["label"], e["reason"]) for e in events[:2]] == [
        ("member.close", "agent.test", "décès"),
        ("member.update", "agent.test", "bounced"),
    ]
    assert all(e["nir"] == member.nir for e in events)
    only_close = json.loads(cli("--json", "audit", "list", "--action", "member.close").stdout)
    assert len(only_close) == 1
    future = json.loads(cli("--json", "audit", "list", "--since", "2999-01-01").stdout)
    assert future == []
    again = cli("member", "close", member.nir, "--reason", "doublon")
    assert again.exit_code == 0
    assert again.stdout.startswith(f"Member {format_nir(member.nir)} was closed already on ")
    assert again.stdout.endswith(" (décès): nothing changed.\n")
    [noop, _] = json.loads(cli("--json", "audit", "list", "--action", "member.close").stdout)
    assert (noop["outcome"], noop["reason"]) == ("noop", "doublon")


def test_an_update_to_the_same_values_says_so_and_writes_nothing(
    cli: Cli, session: Session
) -> None:
    member = make_member(session, first_name="Inès")
    before = snapshot(session)
    result = cli("member", "update", member.nir, "--first-name", "Inès", "--reason", "same")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Nothing to do: member {format_nir(member.nir)} already has these values.\n"
    )
    session.rollback()
    assert snapshot(session) == before  # no event either
    changed = cli("member", "update", member.nir, "--first-name", "Inés", "--reason", "typo")
    assert changed.stdout == f"Updated member {format_nir(member.nir)}.\n"


def test_list_json_and_plain_output(cli: Cli, session: Session) -> None:
    make_member(session, last_name="Zoé", first_name="Anne")
    make_member(session, last_name="Élodie", first_name="Brun", city="Nîmes", postcode="30000")
    rows = json.loads(cli("--json", "member", "list", "--search", "nimes").stdout)
    assert [r["last_name"] for r in rows] == ["Élodie"]
    shown = json.loads(cli("--json", "member", "show", rows[0]["nir"]).stdout)
    assert rows[0] == shown  # a listing item has the keys of the single-object output
    plain = cli("member", "list").stdout.splitlines()
    assert plain[0].split("\t") == ["NIR", "Name", "E-mail", "City", "State"]
    assert plain[1].endswith("\tno_pin")
    assert len(plain) == 3
    assert {line.split("\t")[0] for line in plain[1:]} == {
        format_nir(m.nir) for m in session.exec(select(Member))
    }  # grouped and whole: the agent copies it into the next command


def test_schema_not_upgraded_is_exit_5_with_hint(cli: Cli, tmp_path: Path) -> None:
    empty = cli.with_settings(database_url=f"sqlite:///{tmp_path / 'none.db'}")
    result = empty("member", "list")
    assert result.exit_code == 5
    assert "run cpms-admin db upgrade" in result.stderr
    (tmp_path / "blank.db").write_bytes(b"")
    blank = cli.with_settings(database_url=f"sqlite:///{tmp_path / 'blank.db'}")
    result = blank("member", "list")
    assert (result.exit_code, "schema is empty; run cpms-admin db upgrade" in result.stderr) == (
        5,
        True,
    )


def test_a_file_that_is_not_a_database_is_exit_5(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("this is not sqlite " * 200)
    result = cli.with_settings(database_url=f"sqlite:///{junk}")("member", "list")
    assert result.exit_code == 5
    assert "not a database" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_postgresql_is_exit_5(cli: Cli) -> None:
    down = cli.with_settings(database_url="postgresql://nobody@127.0.0.1:1/cpms")
    result = down("member", "list")
    assert result.exit_code == 5
    assert result.stderr.startswith("Error: cannot open the database:")


def test_db_upgrade_is_idempotent_and_status_reports(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fresh = Cli(
        Settings(database_url="sqlite:///data/cpms.db", pepper=None, mail_dir=settings.mail_dir)
    )
    missing = fresh("db", "status")  # a typo must not create a database
    assert (missing.exit_code, missing.stderr) == (
        5,
        "Error: database data/cpms.db does not exist; run cpms-admin db upgrade\n",
    )
    refused = fresh("db", "upgrade")
    assert (refused.exit_code, refused.stderr) == (
        5,
        "Error: folder data does not exist: check the database URL, or run cpms-admin db "
        "upgrade --create-dirs\n",
    )
    assert not (tmp_path / "data").exists()
    first = fresh("db", "upgrade", "--create-dirs")
    assert first.exit_code == 0 and "upgraded from empty" in first.stdout
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0
    assert "created the pepper file data/pepper" in first.stderr
    assert (tmp_path / "data" / "pepper").stat().st_mode & 0o077 == 0
    second = fresh("db", "upgrade")
    assert second.exit_code == 0 and "already at the latest" in second.stdout
    assert "pepper" not in second.stderr
    assert json.loads(fresh("--json", "db", "status").stdout)["up_to_date"] is True


def test_unknown_option_is_exit_2(cli: Cli) -> None:
    result = cli("member", "list", "--colour")
    assert result.exit_code == 2


MLLE_NOTE = (
    "Note: civility 'Mlle' recorded as MME: letters say 'Madame' ('Mademoiselle' is no longer "
    "used in official correspondence)\n"
)


def test_mlle_is_recorded_as_mme_and_the_agent_is_told(cli: Cli, tmp_path: Path) -> None:
    nir = make_nir()
    added = cli(*ADD[:6], "--civility", "Mlle", *ADD[8:], "--nir", nir, "--no-welcome")
    assert (added.exit_code, added.stderr) == (0, MLLE_NOTE)
    shown = json.loads(cli("--json", "member", "show", nir).stdout)
    assert (shown["civility"], shown["address"]["lines"][0]) == ("MME", "Mme Jean DUPONT")
    # The same in an update, and never for a civility recorded as typed.
    updated = cli("member", "update", nir, "--civility", "Mlle")
    assert (updated.exit_code, updated.stderr) == (0, MLLE_NOTE)
    plain = cli("member", "update", nir, "--civility", "Madame", "--first-name", "Jeanne")
    assert (plain.exit_code, plain.stderr) == (0, "")
    # An import says it once, with the count, and never in its JSON.
    rows = "nir,civility,last_name,first_name,street,postcode,city\n" + "".join(
        f"{make_nir()},{civility},Roux,Léa,4 rue Sala,69002,Lyon\n"
        for civility in ("Mlle", "MME", "mademoiselle", "M")
    )
    (tmp_path / "in.csv").write_text(rows)
    imported = cli("--json", "members", "import", str(tmp_path / "in.csv"))
    assert imported.exit_code == 0, imported.output
    assert imported.stderr == (
        "Note: 2 rows give the civility Mlle or Mademoiselle, recorded as MME: letters say "
        "'Madame' ('Mademoiselle' is no longer used in official correspondence)\n"
    )
    assert json.loads(imported.stdout) == {
        "created": 4, "updated": 0, "skipped": 0, "invalid": 0, "welcome_letters": 0,
        "letters_voided": 0,
        "letters_queued_again": 0,
        "emailed_codes_revoked": 0,
        "dry_run": False,
    }  # fmt: skip


def test_a_nir_pasted_from_a_table_unquoted_is_one_nir(cli: Cli, session: Session) -> None:
    """Agents copy the grouped NIR a table prints and paste it without quotes: the shell
    gives seven words, taken as the one NIR they were; a mistyped key is still refused."""
    member = make_member(session, nir=make_nir())
    groups = format_nir(member.nir).split(" ")
    shown = cli("--json", "member", "show", *groups)
    assert (shown.exit_code, json.loads(shown.stdout)["nir"]) == (0, member.nir), shown.output
    unlocked = cli("account", "unlock", *groups, "--reason", "called")
    assert unlocked.exit_code == 0, unlocked.output
    wrong_key = [*groups[:-1], f"{(int(groups[-1]) + 1) % 97:02d}"]
    refused = cli("member", "show", *wrong_key)
    assert refused.exit_code == 2
    assert f"invalid NIR '{' '.join(wrong_key)}'" in refused.stderr
    cut = cli("member", "show", *groups[:3])  # not a NIR's groups: the words as typed
    assert (cut.exit_code, "unexpected extra argument" in cut.stderr) == (2, True)
    literal = cli("member", "show", "--", *groups)  # after `--`, the words as typed
    assert (literal.exit_code, "unexpected extra argument" in literal.stderr) == (2, True)
    corsican = make_member(session, nir="185052A00608435")  # its department: 2A
    found = cli("--json", "member", "show", *format_nir(corsican.nir).lower().split(" "))
    assert (found.exit_code, json.loads(found.stdout)["nir"]) == (0, corsican.nir), found.output
