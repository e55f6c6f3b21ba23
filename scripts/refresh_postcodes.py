"""Rebuild the postcode base shipped in the package from the npm package codes-postaux.

    .venv/bin/python scripts/refresh_postcodes.py                   # npm pack codes-postaux
    .venv/bin/python scripts/refresh_postcodes.py --version 4.1.2
    .venv/bin/python scripts/refresh_postcodes.py codes-postaux-4.1.2.tgz

Writes cpms_admin/data/postcodes.tsv.gz (format in cpms_admin/members/places.py) and
postcodes.PROVENANCE beside it, then prints what changed in size and count: review the diff
and commit both files. The package's codes-postaux.json gives one entry per (postcode,
commune) with its main delivery label; codes-postaux-full.json (per street) adds the other
labels mail reaches a commune by at a postcode (LES MILLES at 13290 Aix-en-Provence).
The same tarball always gives the same data file, byte for byte.
"""

import argparse
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from cpms_admin.members import places

PACKAGE = "codes-postaux"
POSTCODE = re.compile(r"\d{5}")
INSEE = re.compile(r"\d[\dAB]\d{3}")
LABEL = re.compile(r"[A-Z0-9][A-Z0-9 '()./-]{0,31}")  # 32 characters: 38 less `75002 `
OVERSEAS = ("971", "972", "973", "974", "975", "976", "977", "978", "980", "986", "987", "988")


def fetch(version: str, into: Path) -> Path:
    """`npm pack codes-postaux@VERSION` into `into`: the registry's tarball, unchanged."""
    out = subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{version}", "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    return into / json.loads(out.stdout)[0]["filename"]


def read_package(tarball: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:

        def member(name: str) -> bytes:
            extracted = tar.extractfile(f"package/{name}")
            if extracted is None:
                sys.exit(f"{name} is missing from the tarball")
            return extracted.read()

        return {
            "meta": json.loads(member("package.json")),
            "licence": member("LICENSE").decode(),
            "entries": json.loads(member("codes-postaux.json")),
            "full": json.loads(member("codes-postaux-full.json")),
        }


def check(entry: dict[str, str]) -> None:
    problems = [
        field
        for field, pattern in (("codePostal", POSTCODE), ("codeCommune", INSEE))
        if not pattern.fullmatch(entry[field])
    ]
    if not LABEL.fullmatch(entry["libelleAcheminement"]):
        problems.append("libelleAcheminement")
    if not entry["nomCommune"] or re.search(r"[|\t\n]", entry["nomCommune"]):
        problems.append("nomCommune")
    if problems:
        sys.exit(f"refused: {', '.join(problems)} of {entry}")


def convert(entries: list[dict[str, str]], full: list[dict[str, str]]) -> tuple[str, int]:
    """The data file's text, and how many labels besides the main ones it carries."""
    others: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for row in full:
        check(row)
        others[row["codePostal"], row["codeCommune"]][row["libelleAcheminement"]] += 1
    by_postcode: dict[str, list[str]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    extra = 0
    for entry in sorted(entries, key=lambda e: (e["codePostal"], e["codeCommune"])):
        check(entry)
        pair = (entry["codePostal"], entry["codeCommune"])
        if pair in seen:
            sys.exit(f"refused: {pair} appears twice")
        seen.add(pair)
        name, label = entry["nomCommune"], entry["libelleAcheminement"]
        code = next((c for c in ("", "_") if places.expand_label(name, c) == label), label)
        more = sorted(others[pair].items(), key=lambda item: (-item[1], item[0]))
        labels = [other for other, _ in more if other != label]
        extra += len(labels)
        by_postcode[pair[0]].append("|".join([pair[1], name, code, *labels]))
    text = "".join(f"{pc}\t{chr(9).join(items)}\n" for pc, items in sorted(by_postcode.items()))
    return text, extra


def coverage(postcodes: set[str]) -> str:
    counts = Counter(code[:3] for code in postcodes if code[:3] in OVERSEAS)
    present = ", ".join(f"{prefix}xx ({n})" for prefix, n in sorted(counts.items()))
    absent = ", ".join(f"{prefix}xx" for prefix in OVERSEAS if prefix not in counts)
    metro = sum(1 for code in postcodes if not code.startswith(("97", "98")))
    return f"{metro} metropolitan postcodes (Corsica: 20xxx); overseas {present}; none {absent}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", nargs="?", type=Path, help="a codes-postaux-*.tgz from npm")
    parser.add_argument("--version", default="latest", help="npm version to fetch (latest)")
    parser.add_argument(
        "--out", type=Path, default=places.BASE.parent, help="folder to write (cpms_admin/data)"
    )
    args = parser.parse_args()
    base, provenance = args.out / places.BASE.name, args.out / "postcodes.PROVENANCE"
    with tempfile.TemporaryDirectory() as tmp:
        path = args.tarball or fetch(args.version, Path(tmp))
        tarball = path.read_bytes()
    package = read_package(tarball)
    meta = package["meta"]
    if meta["name"] != PACKAGE:
        sys.exit(f"{path.name} is {meta['name']}, not {PACKAGE}")
    text, extra = convert(package["entries"], package["full"])
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    entries = package["entries"]
    postcodes = {e["codePostal"] for e in entries}
    copyright_line = next(
        (line.strip() for line in package["licence"].splitlines() if "Copyright" in line), ""
    )
    old_size = base.stat().st_size if base.exists() else 0
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_bytes(buffer.getvalue())
    provenance.write_text(
        f"""\
# {places.BASE.name}: French postcodes, their communes and delivery labels
file: {places.BASE.name}, written by scripts/refresh_postcodes.py (format: see
  cpms_admin/members/places.py)
source: npm package {PACKAGE} {meta["version"]} ({meta.get("homepage", "")})
tarball: {path.name}, sha256 {hashlib.sha256(tarball).hexdigest()}
package licence: {meta["license"]} ({copyright_line})
data origin: as the package's README says, built from INSEE's Code officiel géographique
  and DGFiP's FIMOCT (French public open data, Licence Ouverte); this is not La Poste's
  base officielle des codes postaux, and it has no "ligne 5" column: the package's full
  (per street) file gives the other labels kept here instead
converted: {date.today().isoformat()}
entries: {len(entries)} (postcode, commune) pairs, {len(postcodes)} postcodes,
  {len({e["codeCommune"] for e in entries})} communes, {extra} further delivery labels
coverage: {coverage(postcodes)}; no CEDEX codes
"""
    )
    print(
        f"{base}: {len(entries)} entries, {len(postcodes)} postcodes, "
        f"{old_size} -> {base.stat().st_size} bytes; {provenance.name} written"
    )


if __name__ == "__main__":
    main()
