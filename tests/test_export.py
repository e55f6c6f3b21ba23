"""`members export`: the import columns, never a secret, streaming, and a faithful round trip."""

import io
import json
import os
import subprocess
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlmodel import Session, SQLModel, select

from cpms_admin.bulk.export import export_members
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.db import make_engine
from cpms_admin.members.search import search_values
from cpms_admin.models import Account, AuditEvent, Member
from tests.factories import make_member, make_nir
from tests.harness import Cli, own_engine
from tests.import_helpers import forget_members, summaries
from tests.process_helpers import cli_popen, wait_until

BCRYPT = "$2b$04$abcdefghijklmnopqrstuu5ZZmGzXsvFxo9sQJ3bTkMfs0IPpAaKm"


def varied_members(session: Session) -> list[Member]:
    """Members using every column, the odd characters office files carry, and a PIN."""
    members = [
        make_member(
            session,
            nir=make_nir(1),
            civility="M",
            last_name="Lefèvre-Dupont",
            first_name="Gaëtan",
            birth_date="1985-05-12",
            email=None,
            street="3, rue de l'Église",
            address_complement='Bât. "C"; 2e étage',
            postcode="42000",
            city="Saint-Étienne",
        ),
        make_member(
            session,
            nir=make_nir(2),
            civility=None,
            last_name="N'Diaye",
            first_name="Aïssatou",
            street="12 Grand-Rue",
            postcode="1003",
            city="Lausanne",
            country="CH",
        ),
        make_member(session, nir=make_nir(3)),
    ]
    account = session.get(Account, members[2].id)
    assert account is not None
    account.pin_hash = "legacy:" + BCRYPT
    session.commit()
    return members


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_into_an_empty_database_gives_the_same_members(
    cli: Cli, session: Session, tmp_path: Path, fmt: str
) -> None:
    varied_members(session)
    before = summaries(session)
    out = tmp_path / f"members.{fmt}"
    result = cli("--json", "members", "export", "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"exported": 3, "format": fmt, "out": str(out)}
    forget_members(session)
    assert summaries(session) == {}
    imported = cli("--json", "members", "import", str(out))
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["created"] == 3
    assert summaries(session) == before
    assert all(
        m.search_text == search_values(m)["search_text"] for m in session.exec(select(Member))
    )


@pytest.mark.parametrize("fmt", ["xlsx", "jsonl"])
def test_the_out_file_s_name_chooses_the_format_and_a_contrary_one_is_refused(
    cli: Cli, session: Session, tmp_path: Path, fmt: str
) -> None:
    """`--out m.xlsx` wrote a CSV under that name, which `members import` then refused as a
    broken workbook: the format was CSV unless `--format` said otherwise."""
    varied_members(session)
    out = tmp_path / f"members.{fmt}"
    result = cli("--json", "members", "export", "--out", str(out))
    assert json.loads(result.stdout) == {"exported": 3, "format": fmt, "out": str(out)}
    assert cli("members", "import", str(out), "--dry-run").exit_code == 0
    other = tmp_path / "other.xlsx"
    refused = cli("members", "export", "--format", "csv", "--out", str(other))
    assert (refused.exit_code, refused.stderr) == (
        2,
        f"Error: --out {other} is named for xlsx, but --format is csv: give a name that ends "
        "as the format does, or leave --format out to take it from the name\n",
    )
    assert not other.exists()


def test_csv_export_has_the_import_columns_and_no_secret(cli: Cli, session: Session) -> None:
    varied_members(session)
    result = cli("members", "export")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(EXPORT_COLUMNS)
    assert len(lines) == 4
    assert result.stderr == "Exported 3 members.\n"  # stdout holds only the members
    assert "$2b$" not in result.stdout and "legacy" not in result.stdout
    assert '"Bât. ""C""; 2e étage"' in result.stdout


def test_jsonl_export_to_stdout_and_status_filter(cli: Cli, session: Session) -> None:
    members = varied_members(session)
    cli("member", "close", members[0].nir, "--reason", "left")
    result = cli("--json", "members", "export", "--format", "jsonl", "--status", "active")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["nir"] for row in rows] == sorted(m.nir for m in members[1:])
    assert all(list(row) == list(EXPORT_COLUMNS) for row in rows)
    assert rows[0]["email"] is None or "@" in rows[0]["email"]


def test_out_dash_is_standard_output(
    cli: Cli, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = varied_members(session)
    monkeypatch.chdir(tmp_path)
    result = cli("members", "export", "--format", "jsonl", "--out", "-")
    assert [json.loads(line)["nir"] for line in result.stdout.splitlines()] == sorted(
        m.nir for m in members
    )
    assert not (tmp_path / "-").exists()


def test_export_is_audited_with_its_count(cli: Cli, session: Session, tmp_path: Path) -> None:
    """A bulk run's two events: the run's, with its facts, and the closing one with the count."""
    varied_members(session)
    cli("members", "export", "--out", str(tmp_path / "m.csv"))
    session.rollback()
    started, closed = session.exec(
        select(AuditEvent).where(AuditEvent.action == "members.export").order_by(AuditEvent.id)
    ).all()
    assert (started.label, started.outcome, closed.outcome) == ("agent.test", "started", "ok")
    assert json.loads(started.details)["destination"] == str(tmp_path / "m.csv")
    assert json.loads(closed.details) == {"run": started.id, "count": 3}


def test_an_export_cut_short_is_known_from_its_first_row(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """The members leave an export before it ends: its event is committed before the first
    row, so a reader that stops early (`| head`), Ctrl-C or kill -9 cannot take them unseen;
    the closing event says `stopped` and how many rows were written."""
    table = SQLModel.metadata.tables["member"]
    row = make_member(session, nir=make_nir(1)).model_dump(exclude={"id", "nir"})
    session.execute(insert(table), [{**row, "nir": make_nir(n)} for n in range(2, 5_001)])
    session.commit()
    export = cli_popen(
        ["members", "export", "--format", "jsonl"],
        env={**os.environ, **cli.env()},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None
    try:
        # Nothing read yet: the export is stuck on a full pipe, its event already there.
        wait_until(lambda: _export_events(session), what="the export's event")
        assert [event.outcome for event in _export_events(session)] == ["started"]
        head = [export.stdout.readline() for _ in range(5)]
        export.stdout.close()  # the reader stops
        assert export.wait(timeout=60) == 1
    finally:
        export.kill()
    first = sorted(make_nir(n) for n in range(1, 5_001))[:5]
    assert [json.loads(line)["nir"] for line in head] == first
    started, closed = _export_events(session)
    assert (started.outcome, closed.outcome) == ("started", "stopped")
    assert 5 <= json.loads(closed.details)["count"] < 5_000


def _export_events(session: Session) -> list[AuditEvent]:
    session.rollback()
    query = select(AuditEvent).where(AuditEvent.action == "members.export")
    return list(session.exec(query.order_by(AuditEvent.id)).all())


def test_a_failed_export_leaves_no_file(cli: Cli, session: Session, tmp_path: Path) -> None:
    varied_members(session)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("members", "export", "--format", "xml", "--out", str(out_dir / "m.xml"))
    assert result.exit_code == 2
    assert "unknown format 'xml'" in result.stderr
    assert list(out_dir.iterdir()) == []


@pytest.mark.slow  # 20,000 members
def test_export_runs_in_constant_memory(session: Session) -> None:
    """Peak memory while exporting does not grow with the number of members."""
    table = SQLModel.metadata.tables["member"]
    row = {**make_member(session, nir=make_nir(1)).model_dump(exclude={"id", "nir"})}

    def add(start: int, count: int) -> None:
        session.execute(
            insert(table), [{**row, "nir": make_nir(n)} for n in range(start, start + count)]
        )
        session.commit()

    def peak() -> int:
        with open(os.devnull, "w") as sink:
            tracemalloc.start()
            exported = export_members(session, out=sink, fmt="jsonl", agent="t")
            assert exported.members in (2_001, 20_001)
            _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    add(2, 2_000)
    small = peak()
    add(2_002, 18_000)
    large = peak()
    assert large < small * 1.5, (small, large)  # 10 times the members, not more memory


def test_an_export_does_not_block_writers(session: Session, db_url: str) -> None:
    """On SQLite the export reads in a deferred transaction: agents can write meanwhile."""
    varied_members(session)
    other = make_engine(db_url)
    written: list[str] = []

    class Sink(io.StringIO):
        def write(self, text: str) -> int:
            if len(written) == 1:  # header done, rows being read: an agent writes
                with other.connect() as conn:
                    if conn.dialect.name == "sqlite":
                        conn.exec_driver_sql("PRAGMA busy_timeout = 200")  # fail fast
                    conn.execute(
                        insert(SQLModel.metadata.tables["audit_event"]).values(
                            agent="agent",
                            action="member.update",
                            outcome="ok",
                            details="{}",
                            at=datetime.now(UTC),
                        )
                    )
                    conn.commit()
            written.append(text)
            return super().write(text)

    engine = own_engine(db_url)  # as the CLI makes it (the test engine is deferred already)
    try:
        with Session(engine) as cli_session:
            assert export_members(cli_session, out=Sink(), fmt="csv", agent="t").members == 3
    finally:
        other.dispose()
        engine.dispose()
    assert len(written) == 4


@pytest.mark.parametrize("options", [[], ["--excel"], ["--format", "jsonl"]])
def test_stdout_is_utf8_whatever_the_locale_s_encoding(
    cli: Cli, session: Session, options: list[str]
) -> None:
    """A locale of another encoding (an old server's LANG, PYTHONIOENCODING) made a Latin-1
    export that said nothing, or a traceback at the first letter it lacks."""
    import subprocess

    from tests.process_helpers import CPMS

    make_member(session, last_name="Nguyễn", first_name="Zoë")
    for encoding in ("iso8859-15", "ascii"):
        env = {**os.environ, **cli.env(), "PYTHONIOENCODING": encoding}
        done = subprocess.run([str(CPMS), "members", "export", *options], env=env,
                              capture_output=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Nguyễn" in done.stdout.decode("utf-8") and "Zoë" in done.stdout.decode("utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_stdout_that_fails_is_one_line_or_a_quiet_stop(
    cli: Cli, session: Session, tmp_path: Path, fmt: str
) -> None:
    """A full disk behind stdout is one line, exit 2, as for --out; a reader that stops
    early (`| head`) ends the export quietly, exit 1. Never a traceback."""
    import subprocess

    from tests.process_helpers import cli_popen, cli_run

    rows = "\n".join(
        f"{make_nir(n)},Dupont,Jean,1 rue de la Paix,75002,Paris" for n in range(1, 2001)
    )
    source = tmp_path / "many.csv"
    source.write_text("nir,last_name,first_name,street,postcode,city\n" + rows + "\n")
    assert cli("members", "import", str(source)).exit_code == 0
    env = {**os.environ, **cli.env()}
    command = ["members", "export", "--format", fmt]
    with open("/dev/full", "wb") as full:
        failed = cli_run(command, env=env, stdout=full, capture_output=False,
                                stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
    assert (failed.returncode, failed.stderr) == (
        2,
        "Error: cannot write to stdout: No space left on device\n",
    )
    if fmt == "xlsx":
        return  # 2,000 members zip into less than a pipe holds: the reader would not stop it
    reader = cli_popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert len(reader.stdout.read(100)) == 100
    reader.stdout.close()  # as `head` does
    assert (reader.wait(timeout=120), reader.stderr.read()) == (1, b"")


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no traceback
def test_a_workbook_that_cannot_be_assembled_is_not_blamed_on_stdout(
    cli: Cli, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workbook for stdout is assembled in a temporary file first: a full TMPDIR is named
    as such, with what to do, not as a failing stdout; and the half-written workbook is
    dropped quietly (it printed openpyxl's tracebacks as the program exited)."""
    import tempfile

    varied_members(session)
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda: open("/dev/full", "w+b"))  # noqa: SIM115
    result = cli("members", "export", "--format", "xlsx")
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: cannot assemble the workbook in {tempfile.gettempdir()} (No space left on "
        "device): give --out FILE.xlsx, or point TMPDIR at a directory with room\n"
    )
    assert result.stdout == ""
