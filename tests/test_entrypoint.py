"""The installed command, run as a real process, as agents and cron run it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import make_nir
from tests.process_helpers import run_installed

pytestmark = pytest.mark.slow  # every test starts a process
BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path, module: bool = False) -> subprocess.CompletedProcess[str]:
    return run_installed(*args, cwd=cwd, module=module)


def test_console_script_works_end_to_end_from_any_directory(tmp_path: Path) -> None:
    assert shutil.which("cpms-admin", path=str(BIN))
    assert run("db", "upgrade", "--create-dirs", cwd=tmp_path).returncode == 0
    assert (tmp_path / "data" / "cpms.db").exists()
    nir = make_nir()
    added = run(
        "member",
        "add",
        "--nir",
        nir,
        "--last-name",
        "Lefèvre",
        "--first-name",
        "Zoé",
        "--street",
        "3 place Bellecour",
        "--postcode",
        "69002",
        "--city",
        "Lyon",
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    shown = run("--json", "member", "show", nir, cwd=tmp_path)
    assert json.loads(shown.stdout)["last_name"] == "Lefèvre"


def test_python_dash_m_and_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path, module=True)
    assert result.returncode == 0
    assert result.stdout.startswith("cpms-admin ")


def test_expected_failure_prints_one_line_no_traceback(tmp_path: Path) -> None:
    result = run("member", "show", "123", cwd=tmp_path)
    assert result.returncode == 5
    assert result.stderr.strip().count("\n") == 0
    assert "run cpms-admin db upgrade" in result.stderr


def test_help_works_with_nothing_configured(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "member" in result.stdout and not (tmp_path / "data").exists()


def test_start_up_does_not_load_heavy_modules(tmp_path: Path) -> None:
    """`member show` must start fast: WeasyPrint and argon2 load only where needed."""
    probe = (
        "import sys; from cpms_admin.cli.app import app; "
        "print(','.join(m for m in ('weasyprint', 'argon2', 'bcrypt', 'smtplib', 'jinja2')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == ""
