"""What spreadsheets do to member files, named in each refusal, and the files made to survive
them: the CSV French Excel opens as is (`--excel`) and the formula guard on every column."""

import codecs
import csv
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import Session

from cpms_admin.bulk.cells import guard, unguard
from cpms_admin.bulk.code_pages import check_windows_1252
from cpms_admin.bulk.formats import SourceRow, read_member_rows
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.members.fields import COLUMNS, REQUIRED
from cpms_admin.members.records import get_member
from cpms_admin.models import Member
from tests.factories import make_member, make_nir
from tests.harness import Cli
from tests.import_helpers import (
    forget_members,
    json_out,
    member_of,
    person,
    report_rows,
    write_csv,
)

AVOID = (
    "to avoid it, give this column the Text format before the values go in (a CSV: in the "
    "dialog that opens it), or export with `members export --excel` or `--format xlsx`, "
    "which keep it as text"
)
LOST_QUESTION = (
    "holds a '?', which no name or address has: a spreadsheet saving as Windows-1252 "
    '("CSV (séparateur: point-virgule)") writes one for each letter that code page lacks '
    '(ễ in Nguyễn, Ł in Łukasiewicz); save as "CSV UTF-8", or export with --excel or '
    "--format xlsx"
)


def imported(cli: Cli, path: Path, *options: str) -> tuple[int, list[dict[str, str]]]:
    errors = path.with_name("rejets.csv")
    result = cli("members", "import", str(path), "--errors", str(errors), *options)
    return result.exit_code, report_rows(errors)


# --- the CSV for French Excel ----------------------------------------------------------------


def test_excel_csv_has_bom_semicolons_crlf_and_protected_columns(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    member = make_member(
        session, nir=make_nir(1), postcode="01000", city="Bourg-en-Bresse", birth_date="1985-05-12"
    )
    out = tmp_path / "excel.csv"
    result = cli("members", "export", "--excel", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfnir;civility;last_name;")
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[0] == ";".join(EXPORT_COLUMNS) and lines[2] == ""
    fields = next(csv.reader([lines[1]], delimiter=";"))
    row = dict(zip(EXPORT_COLUMNS, fields, strict=True))
    # Formulas giving the text: Excel shows 01000 and saves it back so.
    assert (row["nir"], row["postcode"], row["birth_date"]) == (
        f'="{member.nir}"',
        '="01000"',
        '="1985-05-12"',
    )
    assert (row["city"], row["status"], row["closed_at"]) == ("Bourg-en-Bresse", "active", "")


def test_excel_csv_imports_back_as_written_and_as_excel_saves_it(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    nir = make_member(session, nir=make_nir(1), postcode="01000", city="Bourg-en-Bresse").nir
    out = tmp_path / "excel.csv"
    cli("members", "export", "--excel", "--out", str(out))
    # What French Excel saves after opening it: the values it shows, `;`, CRLF, a BOM.
    with out.open(encoding="utf-8-sig", newline="") as source:
        shown = [[unguard(field) for field in row] for row in csv.reader(source, delimiter=";")]
    saved = tmp_path / "saved.csv"
    with saved.open("w", encoding="utf-8-sig", newline="") as target:
        csv.writer(target, delimiter=";", lineterminator="\r\n").writerows(shown)
    assert shown[1][0] == nir and "01000" in shown[1]
    for path in (out, saved):
        forget_members(session)
        result = cli("--json", "members", "import", str(path))
        assert result.exit_code == 0, result.output
        assert member_of(session, nir).postcode == "01000"


# --- damage, named ---------------------------------------------------------------------------


def test_a_french_excel_save_of_a_plain_csv_is_refused_with_what_excel_did(
    cli: Cli, tmp_path: Path
) -> None:
    # What French Excel makes of a plain export it opened and saved: NIRs in scientific
    # notation, postcodes without their zero, a date column turned to serial numbers.
    rows = [
        person(1, nir="1,85058E+14"),
        person(2, postcode="1000", city="Bourg-en-Bresse"),  # put back: 01000 is Bourg's
        person(3, postcode="5293", city="Paris"),
        person(4, birth_date="31179"),
    ]
    path = write_csv(tmp_path / "excel.csv", rows, sep=";", encoding="cp1252", eol="\r\n")
    code, report = imported(cli, path)
    assert code == 1
    assert [(row["line"], row["field"]) for row in report] == [
        ("2", "nir"),
        ("4", "postcode"),
        ("5", "birth_date"),
    ]
    assert [row["reason"] for row in report] == [
        "invalid NIR '1,85058E+14': a spreadsheet turned it into a number written in "
        f"scientific notation, and its last digits are lost: take the NIR from the original "
        f"file; {AVOID}",
        "postcode '5293' must be 5 digits: if a spreadsheet dropped its leading zero, 05293 "
        f"is not a French postcode either, so check it; {AVOID}",
        "birth date '31179' is a spreadsheet's serial number for a date (1985-05-12?): the "
        f"column lost its date format; write it YYYY-MM-DD; {AVOID}",
    ]


def test_a_formula_s_error_value_is_no_name_nor_address(cli: Cli, tmp_path: Path) -> None:
    """A lookup that found nothing leaves `#N/A` in the cell, saved as text with the rest: it
    would be printed on the envelope."""
    rows = [
        person(1, last_name="#N/A"),
        person(2, street="#REF!"),
        person(3, first_name="#NAME?"),  # not taken for a letter lost to an encoding
        person(4, address_complement="Err:502"),  # LibreOffice's
        person(5, city="#VALEUR!"),  # French Excel's
        person(6, first_name="#NOM ?"),
    ]
    code, report = imported(cli, write_csv(tmp_path / "lookup.csv", rows, sep=";"))
    assert code == 1
    assert [(row["field"], row["reason"].split(": ", 1)[1]) for row in report] == [
        (field, f"{value!r} is a spreadsheet's error value (the formula that filled the cell "
                "failed): take the value from the original data")
        for field, value in (("last_name", "#N/A"), ("street", "#REF!"),
                             ("first_name", "#NAME?"), ("address_complement", "Err:502"),
                             ("city", "#VALEUR!"), ("first_name", "#NOM ?"))
    ]  # fmt: skip


def test_a_nir_written_as_a_number_with_zero_decimals_keeps_its_digits(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """pandas writes a float column so (`290017512300469.0`), and a program may write it in
    scientific notation with 14 decimals: all 15 digits are there, as in a workbook's number
    cell, and the key still has to match. Other decimals are damage."""
    nir, scientific = make_nir(7), make_nir(9)
    rows = [
        person(1, nir=f"{nir}.0"),
        person(2, nir=f"{nir[:-1]}{(int(nir[-1]) + 1) % 10},00"),  # its key is still checked
        person(3, nir=f"{make_nir(8)}.5"),
        person(4, nir=f"{scientific[0]}.{scientific[1:]}E+14"),
    ]
    code, report = imported(cli, write_csv(tmp_path / "pandas.csv", rows))
    assert code == 1
    wrong_key = f"{nir[:-1]}{(int(nir[-1]) + 1) % 10}"
    assert [(row["line"], row["reason"].split(": ")[0:2]) for row in report] == [
        ("3", [f"invalid NIR '{wrong_key}'", "its 2-digit key does not match (check for a typo)"]),
        ("4", [f"invalid NIR '{make_nir(8)}.5'", "a spreadsheet turned it into a number with "
               "decimals, and its last digits are lost"]),
    ]  # fmt: skip
    assert get_member(session, nir).first_name == person(1)["first_name"]
    assert get_member(session, scientific).first_name == person(4)["first_name"]


def test_letters_lost_to_windows_1252_are_never_accepted(cli: Cli, tmp_path: Path) -> None:
    rows = [
        person(1, last_name="Nguyễn"),
        person(2, first_name="Łucja", last_name="Łukasiewicz"),
        person(3, last_name="Lefèvre", street="3 rue de l'Été"),  # in Windows-1252: kept
        person(4, street="12 rue Ngô Quyền"),
    ]
    path = tmp_path / "cp1252.csv"
    text = "".join(
        ";".join(row.get(name) or "" for name in COLUMNS) + "\r\n"
        for row in [dict(zip(COLUMNS, COLUMNS, strict=True)), *rows]
    )
    path.write_bytes(text.encode("cp1252", errors="replace"))  # as Excel saves it
    assert b"Nguy?n" in path.read_bytes()
    code, report = imported(cli, path)
    assert code == 1
    assert [(row["line"], row["field"], row["reason"]) for row in report] == [
        ("2", "last_name", f"last_name: 'Nguy?n' {LOST_QUESTION}"),
        ("3", "last_name", f"last_name: '?ukasiewicz' {LOST_QUESTION}"),
        ("5", "street", f"street: '12 rue Ngô Quy?n' {LOST_QUESTION}"),
    ]


def test_a_replacement_character_is_never_accepted(cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [person(1, city="Orl\ufffdans", postcode="45000")])
    code, report = imported(cli, path)
    assert (code, report[0]["field"]) == (1, "city")
    assert report[0]["reason"] == (
        "city: 'Orl\ufffdans' holds U+FFFD (\ufffd), the mark of a letter lost when the file "
        "was read with the wrong encoding: take the value from the original file, saved as "
        "CSV UTF-8"
    )


def test_utf8_read_as_windows_1252_is_named_on_every_row_it_touched(
    cli: Cli, tmp_path: Path
) -> None:
    """A file holding rows of both encodings (one saved as UTF-8, one as Windows-1252) is
    read as Windows-1252: the UTF-8 rows come out `HÃ©lÃ¨ne`, which no name is."""
    path = tmp_path / "mixed.csv"
    header = ",".join(COLUMNS) + "\n"
    good = ",".join(person(1, last_name="Lefèvre").get(n) or "" for n in COLUMNS) + "\n"
    bad = ",".join(person(2, first_name="Hélène", street="3 rue de la Forêt").get(n) or ""
                   for n in COLUMNS) + "\n"  # fmt: skip
    path.write_bytes(header.encode() + good.encode("cp1252") + bad.encode("utf-8"))
    code, report = imported(cli, path)
    assert code == 1
    assert [(row["line"], row["field"]) for row in report] == [("3", "first_name")]
    assert report[0]["reason"].startswith(
        "first_name: 'HÃ©lÃ¨ne' looks like 'Hélène' read with the wrong encoding"
    )
    result = cli("member", "add", "--nir", make_nir(9), "--last-name", "MÃ¼ller",
                 "--first-name", "Jean", "--street", "1 rue A", "--postcode", "75011",
                 "--city", "Paris")  # fmt: skip
    assert result.exit_code == 2 and "looks like 'Müller'" in result.stderr


@pytest.mark.parametrize(
    ("codec", "eol", "first", "street", "seen"),
    [
        # Excel's "CSV (MS-DOS)": é is 82, Windows-1252's low quotation mark
        ("cp850", "\r\n", "André", "3 rue de la République", "'Andr‚', which is 'André'"),
        # "CSV (Macintosh)": â is 89, Windows-1252's per mille sign, and é is 8E, its Ž
        ("mac_roman", "\r", "Chloé", "12 place du Château", "'ChloŽ', which is 'Chloé'"),
        ("iso8859_15", "\n", "Zoë", "12 rue du Sacré-Cœur", "'C½ur', which is 'Cœur'"),
        # Mac Roman in capitals: its È Ê Ô are Windows-1252's small é æ ï (`LEFéVRE`)
        ("mac_roman", "\r", "JÉRÔME", "12 CHEMIN DE LA FORÊT", "'JƒRïME', which is 'JÉRÔME'"),
    ],
)
def test_another_code_page_read_as_windows_1252_is_refused_naming_it(
    cli: Cli, session: Session, tmp_path: Path, codec: str, eol: str, first: str, street: str,
    seen: str,
) -> None:  # fmt: skip
    """Each byte of these code pages is a Windows-1252 character too: read as such, the file
    gave `H‚lŠne`, stored without a word. The file is refused whole, naming the encoding to
    give; given, it reads as written."""
    rows = [person(1, first_name=first, street=street), person(2)]
    path = write_csv(tmp_path / "adherents.csv", rows, sep=";", encoding=codec, eol=eol)
    refused = cli("members", "import", str(path))
    assert refused.exit_code == 2
    assert f"read as Windows-1252 it gives {seen} in a file saved as" in refused.stderr
    assert f"give --encoding {codec} (or --encoding cp1252 if" in refused.stderr
    assert cli("--json", "member", "list").stdout.strip() == "[]"
    again = cli("members", "import", str(path), "--encoding", codec)
    assert again.exit_code == 0, again.output
    member = member_of(session, rows[0]["nir"])
    assert (member.first_name, member.street) == (first, street)


def test_windows_1252_s_own_punctuation_in_words_is_no_other_code_page(
    cli: Cli, tmp_path: Path
) -> None:
    """Apostrophes, dashes and œ typed inside names are Windows-1252's bytes 80-9F too."""
    rows = [
        person(1, last_name="N‘Diaye", first_name="Jean–Pierre", street="1 place de l’Hôtel"),
        person(2, last_name="Lefèvre", street="12 rue du Sacré-Cœur"),
    ]
    path = write_csv(tmp_path / "adherents.csv", rows, sep=";", encoding="cp1252")
    done = cli("members", "import", str(path))
    assert done.exit_code == 0, done.output
    # Its letters Š š Ž Ÿ, in a file with no other accent (they outnumber nothing there).
    rows = [
        person(3, last_name="Šimek"),
        person(4, last_name="Beneš"),
        person(5, last_name="KAŠPAR", postcode="94240", city="L'HAŸ-LES-ROSES"),
    ]
    path = write_csv(tmp_path / "czech.csv", rows, sep=";", encoding="cp1252")
    done = cli("members", "import", str(path))
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize("line", ["DUPONT;JEAN;12½B RUE LEPIC", "Dupont†;Jean;12 rue Lepic"])
def test_one_stray_byte_is_no_other_code_page(tmp_path: Path, line: str) -> None:
    """A fraction after a number, a sign after a name, in a file without accents: no proof."""
    path = tmp_path / "stray.csv"
    path.write_bytes(f"last_name;first_name;street\r\n{line}\r\n".encode("cp1252"))
    check_windows_1252(path)


def test_a_utf8_row_in_a_windows_1252_file_is_that_row_s_problem(cli: Cli, tmp_path: Path) -> None:
    """UTF-8's second bytes (the BC of `ü`) are no sign of another code page: the file reads
    as Windows-1252, and the UTF-8 row is refused naming the value meant."""
    path = tmp_path / "mixed.csv"
    header = ";".join(COLUMNS) + "\r\n"
    good = ";".join(person(1, last_name="Lefèvre").get(n) or "" for n in COLUMNS) + "\r\n"
    bad = ";".join(person(2, last_name="Müller").get(n) or "" for n in COLUMNS) + "\r\n"
    path.write_bytes(header.encode() + good.encode("cp1252") + bad.encode("utf-8"))
    code, report = imported(cli, path)
    assert code == 1
    assert [(row["line"], row["field"]) for row in report] == [("3", "last_name")]
    assert "looks like 'Müller' read with the wrong encoding" in report[0]["reason"]


def test_a_bom_changes_nothing_when_the_file_is_read_as_windows_1252(
    cli: Cli, tmp_path: Path
) -> None:
    """Excel's "CSV UTF-8" starts with a BOM; with a Windows-1252 row in it, the file is read
    as Windows-1252, where the BOM would stick to the first column's name as `ï»¿`. It is
    dropped: the file imports exactly as without it."""
    header = ";".join(REQUIRED) + "\r\n"
    rows = [person(1, last_name="Mixé"), person(2, first_name="Hélène")]
    lines = [";".join(row[name] for name in REQUIRED) + "\r\n" for row in rows]
    plain = header.encode() + lines[0].encode("cp1252") + lines[1].encode("utf-8")
    outcomes = []
    for name, data in (("plain", plain), ("bom", codecs.BOM_UTF8 + plain)):
        path, errors = tmp_path / f"{name}.csv", tmp_path / f"{name}-rejets.csv"
        path.write_bytes(data)
        result = cli("--json", "members", "import", str(path), "--dry-run", "--errors", str(errors))
        assert result.exit_code == 1, result.stderr
        outcomes.append((json_out(result), report_rows(errors)))
    assert outcomes[1] == outcomes[0]
    summary, report = outcomes[1]
    assert (summary["created"], summary["invalid"]) == (1, 1)
    assert [(row["line"], row["field"]) for row in report] == [("3", "first_name")]
    assert report[0]["reason"].startswith(
        "first_name: 'HÃ©lÃ¨ne' looks like 'Hélène' read with the wrong encoding"
    )


def test_member_add_refuses_the_same(cli: Cli) -> None:
    base = ["member", "add", "--nir", make_nir(1), "--first-name", "Jean", "--street", "1 rue A"]
    place = ["--postcode", "75011", "--city", "Paris"]
    result = cli(*base, "--last-name", "Nguy?n", *place)
    assert result.exit_code == 2
    assert f"last_name: 'Nguy?n' {LOST_QUESTION}" in result.stderr
    result = cli(*base, "--last-name", "Dupont", "--postcode", "75011", "--city", "Par\ufffd")
    assert result.exit_code == 2 and "holds U+FFFD" in result.stderr
    result = cli(*base, "--last-name", "Dupont", *place, "--email", "=1+2@x.fr")
    assert result.exit_code == 2
    assert "e-mail '=1+2@x.fr' must not start with '=' (a spreadsheet would run it)" in (
        result.stderr
    )


# --- the formula guard -----------------------------------------------------------------------


@given(st.text())
def test_the_guard_is_undone_exactly_and_leaves_nothing_to_run(value: str) -> None:
    assert unguard(guard(value)) == value
    assert not guard(value).startswith(("=", "+", "-", "@"))


def test_every_exported_text_is_guarded_and_imports_back(
    cli: Cli, session: Session, tmp_path: Path
) -> None:
    """An e-mail stored before the rule, and a reason an agent typed, start with `=`."""
    nir = make_member(session, nir=make_nir(1)).nir
    cli("member", "close", nir, "--reason", "=HYPERLINK(x)")
    session.execute(update(Member).where(Member.nir == nir).values(email="=1+2@x.fr"))  # type: ignore[arg-type]
    session.commit()
    for fmt in ("csv", "xlsx"):
        out = tmp_path / f"m.{fmt}"
        assert cli("members", "export", "--format", fmt, "--out", str(out)).exit_code == 0
        (row,) = read_member_rows(out)  # reading takes the guard off
        assert (row.values or {})["email"] == "=1+2@x.fr"
    text = (tmp_path / "m.csv").read_text()
    assert ",'=1+2@x.fr," in text and ",'=HYPERLINK(x)," in text
    jsonl = cli("members", "export", "--format", "jsonl").stdout
    assert json.loads(jsonl)["email"] == "=1+2@x.fr"  # for programs: as stored
    # As `member add` does, import refuses the e-mail, and its report keeps it guarded.
    code, report = imported(cli, tmp_path / "m.xlsx", "--on-conflict", "update")
    assert (code, report[0]["field"]) == (1, "email")
    assert report[0]["email"] == "'=1+2@x.fr"


def test_only_the_guards_apostrophe_is_taken_off(tmp_path: Path) -> None:
    row = person(1, last_name="'t Hooft", street="''=1", locality="'-2")
    path = write_csv(tmp_path / "m.csv", [row])
    assert list(read_member_rows(path)) == [
        SourceRow(2, {**row, "street": "'=1", "locality": "-2"})  # then refused, for `-`
    ]


@pytest.mark.parametrize("reason", ["décès", "- départ", "@agence"])
def test_a_closing_reason_survives_the_guard(
    cli: Cli, session: Session, tmp_path: Path, reason: str
) -> None:
    nir = make_member(session, nir=make_nir(1)).nir
    cli("member", "close", nir, "--reason", reason)
    out = tmp_path / "m.csv"
    cli("members", "export", "--out", str(out))
    forget_members(session)
    assert json_out(cli("--json", "members", "import", str(out)))["created"] == 1
    assert member_of(session, nir).closed_reason == reason
