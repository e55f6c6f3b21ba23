"""Helpers for the tests of the files we write: owner-only modes under a lax umask, and files
given away to another user."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534  # a uid that owns nothing of ours


@pytest.fixture(autouse=True)
def lax_umask() -> Iterator[None]:
    """The usual umask, which leaves new files readable by everyone unless told otherwise.
    Autouse in the modules that import it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)
