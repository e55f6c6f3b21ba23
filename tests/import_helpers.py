"""Helpers for the import tests: people to import, the files office software writes (CSV,
workbooks made with openpyxl as a spreadsheet saves them), and the database read back in a
new transaction (an open one would still see the old rows)."""

import csv
import json
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlmodel import Session, SQLModel, select

from cpms_admin.members.fields import COLUMNS
from cpms_admin.members.records import get_member
from cpms_admin.members.views import member_summary
from cpms_admin.models import Member
from tests.factories import make_nir, snapshot
from tests.harness import Cli, new_chain
from tests.process_helpers import cli_run

DUPONT = {
    "nir": "185057800608491",
    "civility": "M",
    "last_name": "Dupont",
    "first_name": "Jean",
    "birth_date": "1985-05-12",
    "email": "jean.dupont@example.fr",
    "street": "12 rue des Lilas",
    "address_complement": None,
    "postcode": "75011",
    "city": "Paris",
    "country": "FR",
    "address_building": None,
    "locality": None,
    "envelope_name": None,
}
# The columns of the first export format: files written before lines 3 and 5 had fields.
FIRST_COLUMNS = COLUMNS[: COLUMNS.index("country") + 1]
PARIS = {key: value for key, value in DUPONT.items() if key != "nir"}


def person(serial: int, **overrides: Any) -> dict[str, Any]:
    """A row of an import file: Jean Dupont of Paris, under a NIR of his own."""
    return {"nir": make_nir(serial), **PARIS, **overrides}


def write_csv(
    path: Path,
    rows: list[dict[str, Any]],
    *,
    sep: str = ",",
    encoding: str = "utf-8",
    eol: str = "\n",
    columns: tuple[str, ...] = COLUMNS,
) -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=sep, lineterminator=eol)
        writer.writerow(columns)
        writer.writerows([[row.get(name) or "" for name in columns] for row in rows])
    return path


def write_xlsx(
    path: Path,
    rows: Iterable[dict[str, Any]],
    *,
    columns: tuple[str, ...] = COLUMNS,
    numbers: tuple[str, ...] = (),
    blank_rows: int = 0,
) -> Path:
    """A workbook as a spreadsheet saves one (openpyxl's normal mode: shared strings, a
    dimension). The values of the columns in `numbers` are stored as numbers where they are
    digits, as a spreadsheet does when the column is not Text; dates stay date cells."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for _ in range(blank_rows):
        sheet.append([])
    sheet.append(list(columns))
    for row in rows:
        cells = []
        for name in columns:
            value = row.get(name)
            if name in numbers and isinstance(value, str) and value.isdigit():
                value = int(value)
            cells.append(value)
        sheet.append(cells)
    book.save(path)
    return path


def damage_sheet(path: Path, out: Path, damage: Callable[[bytes], bytes]) -> Path:
    """A copy of the workbook `path` at `out`, its first sheet's XML gone through `damage`."""
    import zipfile

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = damage(data)
            target.writestr(item, data)
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def snap(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every row, read in a new transaction (an open one would still see the old rows)."""
    session.rollback()
    return snapshot(session)


def report_rows(path: Path) -> list[dict[str, str]]:
    """The rows of an `--errors` report."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def forget_members(session: Session) -> None:
    """An empty database again, but for its pepper and its agents: what `members import`
    starts from."""
    session.rollback()
    for table in reversed(SQLModel.metadata.sorted_tables):
        if table.name not in ("pepper_key", "agent"):
            session.execute(table.delete())
    new_chain(session)
    session.commit()


def json_out(result: Any) -> dict[str, Any]:
    """A command's `--json` document."""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def member_of(session: Session, nir: str) -> Member:
    """The member as the commands left them."""
    session.rollback()
    return get_member(session, nir)


def summaries(session: Session) -> dict[str, dict[str, Any]]:
    """Every member as `member show --json` summarises them, by NIR."""
    session.rollback()
    return {m.nir: member_summary(m) for m in session.exec(select(Member))}


def import_again_after_a_kill(cli: Cli, source: Path, report: Path) -> int:
    """`members import SOURCE --errors REPORT` run as a real process and killed (-9) while it
    reads: its report is no file under its name, only the hidden temporary file the kill
    left, aged a minute as a later run finds it. Then the same command again, to the end:
    its exit code."""
    command = ["members", "import", str(source), "--errors", str(report)]
    env = {**os.environ, **cli.env()}
    killed = cli_run(command, env={**env, "CPMS_FAILPOINT": "import.batch_read"})
    assert killed.returncode == -signal.SIGKILL
    assert not report.exists()
    (left,) = report.parent.glob(f".{report.name}.*.tmp")
    past = left.stat().st_mtime - 60  # killed a minute ago
    os.utime(left, (past, past))
    return cli_run(command, env=env).returncode
