"""The postcode base: its load on first use, a lookup, and the first refusal, each in a fresh
process (median of --runs), then lookups per second once loaded.

Validating a French address pays the load once per process; an import of 100,000 rows pays
it once in all. Aim: load under 30 ms.

    .venv/bin/python bench/places.py [--runs 9]
"""

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import dataclasses, json, pathlib, re, time  # the CLI has loaded these long before
t0 = time.perf_counter()
from cpms_admin.members import places
t1 = time.perf_counter()
places.postcode_base()
t2 = time.perf_counter()
places.find_place("94240", "L'Haÿ-les-Roses")
t3 = time.perf_counter()
try:
    places.find_place("75002", "Lyon")
except places.CityNotAtPostcode:
    pass
t4 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, t3 - t2, t4 - t3]))
"""
LABELS = (
    "import the module (cpms_admin, gzip included)",
    "load the base",
    "first lookup",
    "first refusal",
)
PAIRS = [("75002", "Paris"), ("51290", "st remy bouzemont"), ("13290", "Les Milles")] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    runs = parser.parse_args().runs
    samples = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(runs)
    ]
    for label, times in zip(LABELS, zip(*samples, strict=True), strict=True):
        print(f"{label}: {statistics.median(times) * 1000:.1f} ms")

    import time

    from cpms_admin.members import places

    places.find_place("75002", "Paris")
    start = time.perf_counter()
    for postcode, city in PAIRS:
        places.find_place(postcode, city)
    print(f"lookups once loaded: {len(PAIRS) / (time.perf_counter() - start):,.0f}/s")


if __name__ == "__main__":
    main()
