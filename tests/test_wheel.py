"""A wheel install works on its own: templates, migrations and the postcode base ship inside
the package."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pypdf
import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(out.glob("cpms_admin-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "cpms_admin/templates/letters/letter.css" in names
    assert "cpms_admin/templates/mail/security_code.txt.j2" in names
    assert "cpms_admin/templates/dossier/dossier.html" in names  # member dossier --format pdf
    assert any(n.startswith("cpms_admin/migrations/versions/") for n in names)
    assert "cpms_admin/data/postcodes.tsv.gz" in names
    assert "cpms_admin/data/postcodes.PROVENANCE" in names
    target = out / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


@pytest.mark.slow
def test_installed_wheel_runs_from_another_directory(wheel_install: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(wheel_install), "CPMS_PEPPER": "wheel-test"}
    env.pop("CPMS_DATABASE_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cpms_admin", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import cpms_admin; print(cpms_admin.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(wheel_install))
    assert run("db", "upgrade", "--create-dirs").returncode == 0
    doctor = {c["name"]: c for c in json.loads(run("--json", "doctor").stdout)}
    assert doctor["templates"]["ok"], doctor["templates"]
    assert str(doctor["templates"]["detail"]).startswith(str(wheel_install))
    preview = tmp_path / "welcome.pdf"
    assert run("letters", "preview", "welcome", "--out", str(preview)).returncode == 0
    text = "".join(page.extract_text() for page in pypdf.PdfReader(preview).pages)
    assert "SPÉCIMEN" in text and "Espace Adhérent" in text
    lookup = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cpms_admin.members import places; "
            "print(places.BASE); print(places.find_place('94240', 'lhay les roses'))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    base, place = lookup.stdout.splitlines()
    assert base.startswith(str(wheel_install))
    assert "delivery_label='L HAY LES ROSES'" in place
