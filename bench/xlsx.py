"""XLSX against CSV: reading a workbook (openpyxl read-only against python-calamine), and
`members export` / `members import` of the same members in both formats, on SQLite.

    .venv/bin/python bench/xlsx.py [--members N] [--repeat R]

1. Readers: every row of the same workbook (a `members export --format xlsx` of N members)
   read by openpyxl in read-only mode and by python-calamine, each in a fresh process, at
   N and N/4 members: wall time, CPU time, and the process's peak memory. Flat memory from
   N/4 to N means streaming.
2. Export: `export_members` of the N members to a CSV file, then to an XLSX file.
3. Import: `import_members` of each file into a fresh database, as bench/import.py does
   (CPU time includes the checker process).

Figures are the best of R runs, each on its own; ratios are XLSX / CSV in the same run.
"""

import argparse
import csv
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from cpms_admin.bulk.export import export_members
from cpms_admin.bulk.formats import read_member_rows
from cpms_admin.bulk.importer import import_members
from cpms_admin.members.fields import COLUMNS

bench_import = importlib.import_module("import")  # bench/import.py: members, Clocks, engines
Clocks, best, fresh_engine = bench_import.Clocks, bench_import.best, bench_import.fresh_engine

_READ = """
import sys, time
path, reader = sys.argv[1], sys.argv[2]
if reader == "openpyxl":
    from openpyxl import load_workbook
else:
    from python_calamine import CalamineWorkbook
started, cpu = time.perf_counter(), time.process_time()
rows = 0
if sys.argv[3] == "read":
    if reader == "openpyxl":
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
    output = subprocess.run(
        [sys.executable, "-c", _READ, str(path), reader, "read"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(output[0]), float(output[1]), float(output[2]), float(output[3])


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
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

        readers = {}
        for reader in ("openpyxl", "calamine"):
            runs = [read_in_fresh_process(directory / "members.xlsx", reader) for _ in range(2)]
            rows = runs[0][0]
            wall, cpu, _ = best([run[1:] for run in runs])
            small = read_in_fresh_process(directory / "quarter.xlsx", reader)[3]
            readers[reader] = (rows, wall, cpu, runs[0][3], small)
        sizes = {fmt: (directory / f"members.{fmt}").stat().st_size for fmt in ("csv", "xlsx")}

    print(f"members: {n:,} (SQLite, best of {args.repeat}); files: CSV {sizes['csv'] >> 20} MiB,")
    print(f"         XLSX {sizes['xlsx'] >> 20} MiB")
    print(f"reading the workbook ({n:,} rows, fresh process each):")
    for reader, (rows, wall, cpu, peak, small) in readers.items():
        print(
            f"  {reader:<9} {wall:6.2f} s  CPU {cpu * 1000 / rows:.4f} ms/row  peak memory "
            f"{peak:.0f} MiB ({small:.0f} MiB at {n // 4:,} members)"
        )
    ratio = readers["openpyxl"][2] / readers["calamine"][2]
    print(f"  CPU openpyxl / calamine: {ratio:.1f}x")
    for label, results in (("export", exports), ("import", imports)):
        csv_best, xlsx_best = best(results["csv"]), best(results["xlsx"])
        print(line(f"members {label} CSV", csv_best, n))
        print(line(f"members {label} XLSX", xlsx_best, n))
        print(
            f"{'':<22} XLSX / CSV: wall {xlsx_best[0] / csv_best[0]:.2f}x, "
            f"CPU {xlsx_best[1] / csv_best[1]:.2f}x"
        )


if __name__ == "__main__":
    main()
