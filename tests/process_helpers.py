"""Helpers for the tests that run `cpms-admin` as real processes."""

import sys
from pathlib import Path

CPMS = Path(sys.executable).parent / "cpms-admin"  # the installed entry point
