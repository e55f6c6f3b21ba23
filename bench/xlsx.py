"""XLSX against CSV: reading a workbook (this project's expat reader against openpyxl's
read-only mode and python-calamine), and `members export` / `members import` of the same
members in both formats, on SQLite.

    .venv/bin/python bench/xlsx.py [--members N] [--repeat R] [--reader-runs K]

1. Readers: every row of the same workbook read by each reader, each in a fresh process, at
   N and N/4 members: wall time, CPU time, and the process's peak memory (flat from N/4 to
   N means streaming). Two workbooks: a `members export --format xlsx` of N members (inline
   strings, as openpyxl's write-only mode writes them) and the same cells as Excel or
   LibreOffice save them (a table of shared strings, which every reader holds in memory).
   openpyxl is measured as installed here and, since the dev extras bring defusedxml (for
   fpdf2), which makes it parse with the pure-Python XMLParser, also with that switched off
   (OPENPYXL_DEFUSEDXML=False), as a production install without the extras reads.
2. Export: `export_members` of the N members to a CSV file, then to an XLSX file.
3. Import: `import_members` of each file into a fresh database, as bench/import.py does
   (CPU time includes the checker process and the reading process it forks).

Figures are the best of R runs, each on its own (readers: of K, default 2); ratios compare
figures of the same run.
"""

import argparse
import csv
import importlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from cpms_admin.bulk.export import export_members
from cpms_admin.bulk.formats import read_member_rows
from cpms_admin.bulk.importer import import_members
from cpms_admin.members.fields import COLUMNS

bench_import = importlib.import_module("import")  # bench/import.py: members, Clocks, engines
Clocks, best, fresh_engine = bench_import.Clocks, bench_import.best, bench_import.fresh_engine

READERS = ("expat", "openpyxl", "openpyxl-stdlib", "calamine")
AIM = 2.0  # issue 14: an XLSX import within 2x the CPU of the same members as CSV

_READ = """
import sys, time
path, reader = sys.argv[1], sys.argv[2]
if reader == "expat":  # what `members import` runs, in its reading process
    import openpyxl  # for its date formats: imported before the clock, as for openpyxl
    from cpms_admin.bulk.xlsx.read import filled_rows
elif reader.startswith("openpyxl"):
    from openpyxl import load_workbook
else:
    from python_calamine import CalamineWorkbook
started, cpu = time.perf_counter(), time.process_time()
rows = 0
if reader == "expat":
    for row in filled_rows(__import__("pathlib").Path(path), 1):
        rows += 1
elif reader.startswith("openpyxl"):
    book = load_workbook(path, read_only=True, data_only=True)
    sheet = book.worksheets[0]
    sheet.reset_dimensions()
    for row in sheet.iter_rows(values_only=True):
        rows += 1
    book.close()
else:
    book = CalamineWorkbook.from_path(path)
    for row in book.get_sheet_by_index(0).iter_rows():
        rows += 1
# VmHWM, not ru_maxrss: the latter keeps the peak of the process that started this one.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
print(rows, time.perf_counter() - started, time.process_time() - cpu, peak / 1024)
"""


def read_in_fresh_process(path: Path, reader: str) -> tuple[int, float, float, float]:
    """Rows, wall s, CPU s, and the process's peak memory in MiB."""
    environment = dict(os.environ)
    if reader == "openpyxl-stdlib":
        environment["OPENPYXL_DEFUSEDXML"] = "False"
    output = subprocess.run(
        [sys.executable, "-c", _READ, str(path), reader.partition("-")[0]],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
    ).stdout.split()
    return int(output[0]), float(output[1]), float(output[2]), float(output[3])


_INLINE = re.compile(r'<c([^>]*) t="inlineStr"><is><t>([^<]*)</t></is></c>')
_SHARED_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_SHARED_RELATION = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"
)


def as_excel_saves(source: Path, target: Path) -> None:
    """The workbook with its strings moved to a shared table, as spreadsheets save them."""
    table: dict[str, int] = {}

    def share(match: re.Match[str]) -> str:
        index = table.setdefault(match[2], len(table))
        return f'<c{match[1]} t="s"><v>{index}</v></c>'

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename.startswith("xl/worksheets/"):
                data = _INLINE.sub(share, data.decode()).encode()
            elif item.filename == "[Content_Types].xml":  # where openpyxl looks for it
                data = data.replace(
                    b"</Types>",
                    b'<Override PartName="/xl/sharedStrings.xml" ContentType="'
                    + _SHARED_TYPE.encode()
                    + b'"/></Types>',
                )
            elif item.filename == "xl/_rels/workbook.xml.rels":  # where Excel looks for it
                data = data.replace(
                    b"</Relationships>",
                    b'<Relationship Id="rIdShared" Type="'
                    + _SHARED_RELATION.encode()
                    + b'" Target="sharedStrings.xml"/></Relationships>',
                )
            new.writestr(item, data)
        strings = "".join(f"<si><t>{text}</t></si>" for text in table)  # escaped as they were
        new.writestr(
            "xl/sharedStrings.xml",
            '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f"{strings}</sst>",
        )


def populate(engine: Engine, directory: Path, count: int) -> None:
    path = directory / "seed.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter=";")
        writer.writeheader()
        writer.writerows(bench_import.members(count))
    with Session(engine, expire_on_commit=False) as session:
        counts = import_members(session, member_file=read_member_rows(path), agent="bench")
    assert counts.created == count, counts


def export_to(engine: Engine, path: Path, fmt: str) -> tuple[float, float, float]:
    clocks = Clocks()
    binary = fmt == "xlsx"
    with (
        open(path, "wb") if binary else open(path, "w", encoding="utf-8", newline="") as out,
        Session(engine) as session,
    ):
        export_members(session, out=out, fmt=fmt, agent="bench")
    return clocks.read()


def import_from(engine: Engine, path: Path) -> tuple[float, float, float]:
    clocks = Clocks()
    with Session(engine, expire_on_commit=False) as session:
        counts = import_members(session, member_file=read_member_rows(path), agent="bench")
    elapsed = clocks.read()
    assert counts.invalid == 0 and counts.created > 0, counts
    return elapsed


def line(label: str, figures: tuple[float, ...], n: int) -> str:
    wall, cpu = figures[0], figures[1]
    return f"{label:<22} {wall:7.2f} s {n / wall:9,.0f} rows/s   CPU {cpu * 1000 / n:.4f} ms/row"


def readers_on(
    big: Path, small: Path, n: int, repeat: int
) -> dict[str, tuple[int, float, float, float]]:
    """Per reader: rows, wall s, CPU s (best of `repeat`), peak MiB at N, peak MiB at N/4."""
    found = {}
    for reader in READERS:
        runs = [read_in_fresh_process(big, reader) for _ in range(repeat)]
        assert runs[0][0] == n + 1, (reader, runs[0][0])  # the members and the header
        wall, cpu, peak = best([run[1:] for run in runs])
        found[reader] = (runs[0][0], wall, cpu, peak, read_in_fresh_process(small, reader)[3])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reader-runs", type=int, default=2, help="runs of each reader at N")
    args = parser.parse_args()
    if min(args.repeat, args.reader_runs) < 1:
        parser.error("--repeat and --reader-runs take 1 or more")
    n = args.members
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        source = fresh_engine(directory, "source.db")
        populate(source, directory, n)
        quarter = fresh_engine(directory, "quarter.db")
        populate(quarter, directory, n // 4)
        export_to(quarter, directory / "quarter.xlsx", "xlsx")

        exports: dict[str, list[tuple[float, float, float]]] = {"csv": [], "xlsx": []}
        imports: dict[str, list[tuple[float, float, float]]] = {"csv": [], "xlsx": []}
        for run in range(args.repeat):
            for fmt in ("csv", "xlsx"):
                exports[fmt].append(export_to(source, directory / f"members.{fmt}", fmt))
            for fmt in ("csv", "xlsx"):
                engine = fresh_engine(directory, f"import-{fmt}-{run}.db")
                imports[fmt].append(import_from(engine, directory / f"members.{fmt}"))

        as_excel_saves(directory / "members.xlsx", directory / "excel.xlsx")
        as_excel_saves(directory / "quarter.xlsx", directory / "excel-quarter.xlsx")
        workbooks = {
            "as exported (inline strings)": readers_on(
                directory / "members.xlsx", directory / "quarter.xlsx", n, args.reader_runs
            ),
            "as Excel saves it (shared strings)": readers_on(
                directory / "excel.xlsx", directory / "excel-quarter.xlsx", n, args.reader_runs
            ),
        }
        sizes = {fmt: (directory / f"members.{fmt}").stat().st_size for fmt in ("csv", "xlsx")}

    print(f"members: {n:,} (SQLite, best of {args.repeat}); files: CSV {sizes['csv'] >> 20} MiB,")
    print(f"         XLSX {sizes['xlsx'] >> 20} MiB")
    for label, readers in workbooks.items():
        print(f"reading the workbook {label}, {n:,} rows, fresh process each:")
        chosen = readers["expat"][2]
        for reader, (rows, wall, cpu, peak, small) in readers.items():
            print(
                f"  {reader:<15} {wall:6.2f} s  CPU {cpu * 1000 / rows:.4f} ms/row "
                f"({cpu / chosen:4.1f}x expat's)  peak memory {peak:.0f} MiB "
                f"({small:.0f} MiB at {n // 4:,} members)"
            )
    for label, results in (("export", exports), ("import", imports)):
        csv_best, xlsx_best = best(results["csv"]), best(results["xlsx"])
        print(line(f"members {label} CSV", csv_best, n))
        print(line(f"members {label} XLSX", xlsx_best, n))
        ratio = xlsx_best[1] / csv_best[1]
        verdict = f" (aim: within {AIM:.0f}x: {'met' if ratio <= AIM else 'NOT met'})"
        print(
            f"{'':<22} XLSX / CSV: wall {xlsx_best[0] / csv_best[0]:.2f}x, CPU {ratio:.2f}x"
            + (verdict if label == "import" else "")
        )


if __name__ == "__main__":
    main()
