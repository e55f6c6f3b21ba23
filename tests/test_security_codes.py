"""One-time codes (generation, keyed hashing) and the pepper they and PINs depend on."""

import os
import re
import secrets
import stat
from collections import Counter
from pathlib import Path

import pytest

from cpms_admin.errors import InvalidInput, NotReady
from cpms_admin.security.codes import (
    CODE_LENGTH,
    check_code_format,
    generate_code,
    hash_code,
    verify_code,
)
from cpms_admin.security.pepper import (
    DEFAULT_PEPPER_FILE,
    create_pepper_file,
    load_pepper,
    pepper_file_problem,
)
from cpms_admin.settings import Settings

PEPPER = b"test-pepper-0123456789abcdef"


# --- codes ------------------------------------------------------------------------------------


def test_generated_codes_are_six_ascii_digits_spread_evenly() -> None:
    codes = [generate_code() for _ in range(2000)]
    assert all(re.fullmatch(r"[0-9]{6}", code) for code in codes)
    assert CODE_LENGTH == 6
    assert len(set(codes)) > 1900  # about 2 collisions expected among a million values
    first_digits = Counter(code[0] for code in codes)
    assert set(first_digits) == set("0123456789")  # leading zeros do happen
    assert min(first_digits.values()) > 100  # 200 expected per digit


def test_small_codes_are_zero_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbelow", lambda _n: 42)
    assert generate_code() == "000042"


@pytest.mark.parametrize("code", ["12345", "1234567", "", "abcdef", "12-456", "０１２３４５"])
def test_code_format_refuses_anything_but_six_ascii_digits(code: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_code_format(code)
    assert str(exc.value) == "security code must be exactly 6 digits (0-9)"


def test_code_hash_hides_the_code_and_is_salted() -> None:
    first, second = hash_code(pepper=PEPPER, code="004213"), hash_code(pepper=PEPPER, code="004213")
    assert "004213" not in first
    assert first != second
    assert len(first) <= 128  # SecurityCode.code_hash


def test_verify_code_right_wrong_and_other_pepper() -> None:
    stored = hash_code(pepper=PEPPER, code="004213")
    assert verify_code(pepper=PEPPER, code="004213", stored=stored) is True
    assert verify_code(pepper=PEPPER, code="004214", stored=stored) is False
    assert verify_code(pepper=PEPPER, code="4213", stored=stored) is False
    assert verify_code(pepper=b"another-pepper", code="004213", stored=stored) is False


@pytest.mark.parametrize("stored", ["", "no-separator", "abc$", "abc$é"])
def test_verify_code_against_corrupt_value_says_no(stored: str) -> None:
    assert verify_code(pepper=PEPPER, code="004213", stored=stored) is False


def test_hash_code_refuses_malformed_code() -> None:
    with pytest.raises(InvalidInput):
        hash_code(pepper=PEPPER, code="4213")


# --- pepper file ------------------------------------------------------------------------------


def test_pepper_file_is_private_even_with_a_lax_umask(tmp_path: Path) -> None:
    path = tmp_path / "data" / "pepper"
    old_umask = os.umask(0)
    try:
        create_pepper_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", path.read_text())
    assert os.listdir(path.parent) == ["pepper"]  # no temporary file left behind
    assert pepper_file_problem(path) is None


def test_pepper_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    create_pepper_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        create_pepper_file(path)
    assert path.read_bytes() == before


def test_pepper_files_differ(tmp_path: Path) -> None:
    create_pepper_file(tmp_path / "a")
    create_pepper_file(tmp_path / "b")
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


def test_doctor_flags_a_readable_or_missing_pepper_file(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    create_pepper_file(path)
    path.chmod(0o644)
    problem = pepper_file_problem(path)
    assert problem == (
        f"pepper file {path} is accessible to other users (mode 0644); run: chmod 600 {path}"
    )
    assert path.read_text().strip() not in problem
    missing = pepper_file_problem(tmp_path / "nope")
    assert missing is not None
    assert "cannot be read" in missing


# --- load_pepper ------------------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_environment_pepper_wins_over_files(in_tmp: Path) -> None:
    (in_tmp / "other").write_text("from-file\n")
    create_pepper_file(DEFAULT_PEPPER_FILE)
    assert load_pepper(Settings(pepper="from-env", pepper_file="other")) == b"from-env"


def test_configured_file_wins_over_default(in_tmp: Path) -> None:
    (in_tmp / "other").write_text("  from-file\n")
    create_pepper_file(DEFAULT_PEPPER_FILE)
    assert load_pepper(Settings(pepper_file="other")) == b"from-file"


def test_default_file_is_used_and_matches_its_text_in_the_environment(in_tmp: Path) -> None:
    create_pepper_file(DEFAULT_PEPPER_FILE)
    text = DEFAULT_PEPPER_FILE.read_text().strip()
    assert load_pepper(Settings()) == text.encode()
    assert load_pepper(Settings(pepper=text)) == load_pepper(Settings())


def test_no_pepper_is_not_ready(in_tmp: Path) -> None:
    with pytest.raises(NotReady) as exc:
        load_pepper(Settings())
    assert str(exc.value) == (
        "no pepper: set CPMS_PEPPER or CPMS_PEPPER_FILE, or run cpms-admin db upgrade"
    )
    assert exc.value.exit_code == 5


def test_configured_file_missing_is_not_ready_without_falling_back(in_tmp: Path) -> None:
    create_pepper_file(DEFAULT_PEPPER_FILE)
    with pytest.raises(NotReady, match=r"cannot read pepper file /nonexistent/pepper"):
        load_pepper(Settings(pepper_file="/nonexistent/pepper"))


def test_empty_pepper_file_is_not_ready(in_tmp: Path) -> None:
    (in_tmp / "empty").write_text("\n")
    with pytest.raises(NotReady, match=r"^pepper file empty is empty$"):
        load_pepper(Settings(pepper_file="empty"))
