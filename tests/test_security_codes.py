"""One-time codes (generation, keyed hashing) and the pepper they and PINs depend on."""

import os
import re
import secrets
import stat
from collections import Counter
from pathlib import Path

import pytest

from cpms_admin.credentials.code_hash import (
    CODE_LENGTH,
    check_code_format,
    generate_code,
    hash_code,
    verify_code,
)
from cpms_admin.errors import Conflict, InvalidInput, NotReady
from cpms_admin.pepper import (
    PEPPER_FILE_NAME,
    create_pepper_file,
    pepper_file_path,
    pepper_file_problem,
    read_peppers,
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
    assert re.fullmatch(r"1:[0-9a-f]{64}\n", path.read_text())
    assert os.listdir(path.parent) == ["pepper"]  # no temporary file left behind
    assert pepper_file_problem(path) is None


def test_pepper_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    create_pepper_file(path)
    before = path.read_bytes()
    with pytest.raises(Conflict):
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
        f"pepper file {path} is open to other users (mode 0644)",
        f"chmod 640 {path}",
    )
    assert path.read_text().strip() not in str(problem)
    missing = pepper_file_problem(tmp_path / "nope")
    assert missing is not None
    assert "cannot be read" in missing[0]


# --- read_peppers: where the pepper is, and what a file holds --------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_private(path: Path, text: str) -> None:
    """A pepper file as `db upgrade` and an administrator make it: 0600 (others: refused)."""
    path.write_text(text)
    path.chmod(0o600)


def beside(database: Path, **settings: str) -> Settings:
    return Settings(database_url=f"sqlite:///{database}", **settings)


def test_environment_pepper_wins_over_files(in_tmp: Path) -> None:
    write_private(in_tmp / "other", "from-file\n")
    create_pepper_file(in_tmp / PEPPER_FILE_NAME)
    chosen = read_peppers(beside(in_tmp / "cpms.db", pepper="from-env", pepper_file="other"))
    assert (chosen.current, chosen.source) == (b"from-env", "CPMS_PEPPER")


def test_configured_file_wins_over_the_one_beside_the_database(in_tmp: Path) -> None:
    write_private(in_tmp / "other", "  from-file\n")
    create_pepper_file(in_tmp / PEPPER_FILE_NAME)
    assert read_peppers(beside(in_tmp / "cpms.db", pepper_file="other")).current == b"from-file"


def test_the_default_pepper_is_beside_the_database_not_in_the_working_directory(
    in_tmp: Path,
) -> None:
    (in_tmp / "data").mkdir()
    create_pepper_file(in_tmp / "data" / PEPPER_FILE_NAME)  # a trap: data/pepper of the cwd
    elsewhere = in_tmp / "srv" / "cpms.db"
    elsewhere.parent.mkdir()
    assert pepper_file_path(beside(elsewhere)) == elsewhere.parent / "pepper"
    with pytest.raises(NotReady) as exc:
        read_peppers(beside(elsewhere))
    assert str(exc.value).startswith(f"no pepper: {elsewhere.parent / 'pepper'} does not exist.")
    created = create_pepper_file(elsewhere.parent / PEPPER_FILE_NAME)
    assert read_peppers(beside(elsewhere)) == created


def test_a_bare_pepper_is_pepper_1_and_matches_its_text_in_the_environment(
    in_tmp: Path,
) -> None:
    write_private(in_tmp / PEPPER_FILE_NAME, "0123abcd\n")
    from_file = read_peppers(beside(in_tmp / "cpms.db"))
    from_env = read_peppers(beside(in_tmp / "cpms.db", pepper="0123abcd"))
    assert from_file.secrets == from_env.secrets == {1: b"0123abcd"}


def test_a_rotated_file_holds_several_peppers_and_the_highest_is_current(in_tmp: Path) -> None:
    write_private(in_tmp / PEPPER_FILE_NAME, "1:old\n\n3:newest\n2:older\n")
    peppers = read_peppers(beside(in_tmp / "cpms.db"))
    assert (peppers.current_id, peppers.current, peppers.get(1)) == (3, b"newest", b"old")
    with pytest.raises(NotReady, match=r"pepper 4, which pepper file .* no longer holds"):
        peppers.get(4)


def test_a_pepper_that_begins_with_a_hash_is_read_alone_or_with_its_id(in_tmp: Path) -> None:
    """A lone line is the pepper (as it always was, in the file or CPMS_PEPPER); among other
    lines, `1:#...` is what the refusal of a `#` line tells the operator to write."""
    write_private(in_tmp / PEPPER_FILE_NAME, "#0123abcd\n")
    assert read_peppers(beside(in_tmp / "cpms.db")).secrets == {1: b"#0123abcd"}
    assert read_peppers(beside(in_tmp / "cpms.db", pepper="#0123")).secrets == {1: b"#0123"}
    write_private(in_tmp / PEPPER_FILE_NAME, "1:#0123abcd\n2:ef\n")
    assert read_peppers(beside(in_tmp / "cpms.db")).secrets == {1: b"#0123abcd", 2: b"ef"}


@pytest.mark.parametrize(
    ("text", "error"),
    [("\n", "is empty"), ("x:abc\n", "line 1: expected <id>:<pepper>"),
     ("1:a\n1:b\n", "pepper 1 is given twice"), ("2:\n", "line 1: expected"),
     ("# prod, abc\n1:x\n", "line 1 begins with #: a pepper file holds no comments")],
)  # fmt: skip
def test_a_malformed_pepper_file_is_not_ready(in_tmp: Path, text: str, error: str) -> None:
    write_private(in_tmp / PEPPER_FILE_NAME, text)
    with pytest.raises(NotReady, match=error) as exc:
        read_peppers(beside(in_tmp / "cpms.db"))
    assert exc.value.exit_code == 5
    assert "abc" not in str(exc.value)  # a pepper is never repeated in a message


def test_postgresql_needs_the_pepper_set() -> None:
    settings = Settings(database_url="postgresql+psycopg://u@127.0.0.1/cpms")
    with pytest.raises(NotReady, match="needs CPMS_PEPPER or CPMS_PEPPER_FILE"):
        read_peppers(settings)


def test_configured_file_missing_is_not_ready_without_falling_back(in_tmp: Path) -> None:
    create_pepper_file(in_tmp / PEPPER_FILE_NAME)
    with pytest.raises(NotReady, match=r"no pepper: /nonexistent/pepper does not exist"):
        read_peppers(beside(in_tmp / "cpms.db", pepper_file="/nonexistent/pepper"))
