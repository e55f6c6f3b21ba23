"""The bulk file formats: what office software writes must read right, exports must re-import."""

import io
import tracemalloc
from datetime import date
from pathlib import Path

import pytest

from cpms_admin.bulk.formats import (
    RowError,
    SourceRow,
    open_member_writer,
    read_member_rows,
    write_error_report,
)
from cpms_admin.bulk.rows import EXPORT_COLUMNS
from cpms_admin.errors import InvalidInput
from cpms_admin.members.fields import COLUMNS
from tests.harness import Cli
from tests.import_helpers import DUPONT, FIRST_COLUMNS, person, report_rows

NO_STATUS = {"status": None, "closed_reason": None, "closed_at": None}
ACTIVE = {**NO_STATUS, "status": "active"}
MARTIN = {
    **DUPONT,
    "nir": "285057800608434",
    "civility": "MME",
    "last_name": "Martin",
    "first_name": "Élodie",
    "email": None,
    "address_complement": "Bât. B",
}


def put(tmp_path: Path, name: str, text: str, *, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def csv_text(rows: list[dict[str, str | None]], *, sep: str = ",", eol: str = "\n") -> str:
    lines = [sep.join(COLUMNS)] + [sep.join(row.get(c) or "" for c in COLUMNS) for row in rows]
    return eol.join(lines) + eol


def rows_of(path: Path, **options: str) -> list[SourceRow]:
    return list(read_member_rows(path, **options))


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_separator_is_detected_from_the_header(tmp_path: Path, sep: str) -> None:
    path = put(tmp_path, "members.csv", csv_text([DUPONT, MARTIN], sep=sep))
    member_file = read_member_rows(path)
    assert (member_file.fmt, member_file.delimiter, member_file.encoding) == ("csv", sep, "utf-8")
    assert member_file.columns == COLUMNS
    assert list(member_file) == [SourceRow(2, DUPONT), SourceRow(3, MARTIN)]
    assert list(member_file) == list(member_file)  # each pass reads the file again


def test_explicit_delimiter_wins_over_detection(tmp_path: Path) -> None:
    # One column only once split on `;`, so the file is refused, with a hint.
    path = put(tmp_path, "members.csv", csv_text([DUPONT]))
    with pytest.raises(InvalidInput, match=r"missing required columns: .*give --delimiter\)$"):
        read_member_rows(path, delimiter=";")
    tabs = put(tmp_path, "tabs.csv", csv_text([DUPONT], sep="\t"))
    assert rows_of(tabs, delimiter="tab") == [SourceRow(2, DUPONT)]


def test_utf8_bom_does_not_stick_to_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text([MARTIN], sep=";").encode())
    member_file = read_member_rows(path)
    assert member_file.encoding == "utf-8"
    assert member_file.columns[0] == "nir"
    assert rows_of(path) == [SourceRow(2, MARTIN)]
    # A Windows-1252 row added to it makes it Windows-1252, where the BOM would be `ï»¿`:
    # it is dropped all the same, whether the encoding was guessed or given.
    lefevre = {**DUPONT, "last_name": "Lefèvre"}
    line = ";".join(lefevre.get(name) or "" for name in COLUMNS) + "\n"
    path.write_bytes(path.read_bytes() + line.encode("cp1252"))
    assert read_member_rows(path).encoding == "cp1252"
    misread = {
        name: MARTIN[name].encode().decode("cp1252")
        for name in ("first_name", "address_complement")
    }  # `Ã‰lodie`, which import names (test_spreadsheet_damage.py)
    expected = [SourceRow(2, {**MARTIN, **misread}), SourceRow(3, lefevre)]
    assert rows_of(path) == rows_of(path, encoding="cp1252") == expected


def test_windows_1252_is_detected_and_decoded(tmp_path: Path) -> None:
    accents = {
        **MARTIN,
        "last_name": "Cœur-Français",
        "street": "1 rue de l'Été",
        "address_complement": "Loyer 100 €",
    }
    path = put(tmp_path, "export.csv", csv_text([accents], sep=";", eol="\r\n"), encoding="cp1252")
    member_file = read_member_rows(path)
    assert member_file.encoding == "cp1252"
    assert rows_of(path) == [SourceRow(2, accents)]


def test_a_late_windows_1252_byte_is_found_before_reading(tmp_path: Path) -> None:
    rows = [{**DUPONT, "nir": f"1{n:014d}"} for n in range(3000)]
    rows.append({**DUPONT, "city": "Vénissieux"})
    path = put(tmp_path, "late.csv", csv_text(rows), encoding="cp1252")
    assert read_member_rows(path).encoding == "cp1252"
    assert list(read_member_rows(path))[-1].values == {**DUPONT, "city": "Vénissieux"}


def test_explicit_encoding_is_honoured(tmp_path: Path) -> None:
    # In ISO-8859-15 `€` is byte A4, which Windows-1252 would read as `¤`.
    euro = {**DUPONT, "address_complement": "Loyer 100 €"}
    path = put(tmp_path, "latin9.csv", csv_text([euro]), encoding="iso8859-15")
    assert rows_of(path)[0].values == {**euro, "address_complement": "Loyer 100 ¤"}
    assert rows_of(path, encoding="iso8859-15") == [SourceRow(2, euro)]
    assert read_member_rows(path, encoding="ISO-8859-15").encoding == "iso8859-15"


def test_wrong_explicit_encoding_is_refused_with_the_line(tmp_path: Path) -> None:
    path = put(tmp_path, "m.csv", csv_text([DUPONT, MARTIN]), encoding="cp1252")
    with pytest.raises(InvalidInput, match=r"^.*m\.csv: line 3 is not valid utf-8$"):
        read_member_rows(path, encoding="utf-8")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(csv_text([DUPONT]).encode() + b"\x81\n")  # undefined in cp1252 too
    with pytest.raises(InvalidInput, match=r"line 3 is not valid utf-8 or cp1252; give --encoding"):
        read_member_rows(garbage)
    with pytest.raises(InvalidInput, match="unknown encoding 'klingon'"):
        read_member_rows(path, encoding="klingon")


def test_excel_unicode_text_utf16_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes(csv_text([MARTIN], sep="\t", eol="\r\n").encode("utf-16"))
    member_file = read_member_rows(path)
    assert (member_file.encoding, member_file.delimiter) == ("utf-16", "\t")
    assert rows_of(path) == [SourceRow(2, MARTIN)]


def test_quoted_separator_and_line_break_keep_later_line_numbers(tmp_path: Path) -> None:
    header = ";".join(FIRST_COLUMNS)
    text = (
        f"{header}\r\n"
        '185057800608491;M;"Dupont; fils";Jean;;;'
        '"12 rue des Lilas\r\nEntrée B";;75011;Paris;FR\r\n'
        "\r\n"
        "285057800608434;MME;Martin;Élodie;;;3 place du Marché;;69001;Lyon;FR\r\n"
    )
    path = put(tmp_path, "m.csv", text)
    first, second = rows_of(path)
    assert first.line == 2
    assert first.values is not None
    assert first.values["last_name"] == "Dupont; fils"
    assert first.values["street"] == "12 rue des Lilas\r\nEntrée B"
    assert second.line == 5
    assert second.values is not None
    assert second.values["city"] == "Lyon"


def test_padding_is_stripped_and_empty_cells_are_none(tmp_path: Path) -> None:
    header = " ; ".join(f"  {name.upper()} " for name in FIRST_COLUMNS)
    row = (
        ' 185057800608491 ;  M ; "Dupont; fils"  ;Jean ;   ;  ;'
        " 12 rue des Lilas ; ; 75011 ;Paris;  "
    )
    path = put(tmp_path, "padded.csv", f"{header}\n{row}\n")
    assert read_member_rows(path).columns == FIRST_COLUMNS
    assert rows_of(path) == [
        SourceRow(
            2,
            {
                **DUPONT,
                "last_name": "Dupont; fils",
                "birth_date": None,
                "email": None,
                "country": None,
            },
            absent=("address_building", "locality", "envelope_name"),  # not in the header
        )
    ]


def test_missing_and_unknown_columns_are_named(tmp_path: Path) -> None:
    path = put(tmp_path, "m.csv", "nir;nom;first_name;street;postcode;city;telephone\n")
    with pytest.raises(InvalidInput) as caught:
        read_member_rows(path)
    assert str(caught.value) == (
        f"{path}: unknown columns: nom, telephone; missing required columns: last_name"
    )


def test_optional_columns_may_be_absent_and_pin_hash_is_accepted(tmp_path: Path) -> None:
    path = put(
        tmp_path,
        "m.csv",
        "nir,last_name,first_name,street,postcode,city,pin_hash,\n"
        "185057800608491,Dupont,Jean,1 rue A,75011,Paris,$2b$12$abc,\n",
    )
    member_file = read_member_rows(path)
    assert member_file.columns == (
        "nir",
        "last_name",
        "first_name",
        "street",
        "postcode",
        "city",
        "pin_hash",
    )
    (row,) = member_file
    assert row.values == {
        **dict.fromkeys(COLUMNS),
        "nir": "185057800608491",
        "last_name": "Dupont",
        "first_name": "Jean",
        "street": "1 rue A",
        "postcode": "75011",
        "city": "Paris",
        "pin_hash": "$2b$12$abc",
    }
    assert "$2b$" not in repr(row)


def test_wrong_field_count_is_a_row_problem(tmp_path: Path) -> None:
    text = (
        csv_text([DUPONT])
        + "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
        + csv_text([MARTIN]).split("\n")[1]
    )
    path = put(tmp_path, "m.csv", text)
    assert rows_of(path) == [
        SourceRow(2, DUPONT),
        SourceRow(
            3, None, "expected 14 fields, found 15 (a value holding ',' must be in double quotes)"
        ),
        SourceRow(4, MARTIN),
    ]


def test_trailing_separator_is_tolerated_but_not_stray_values(tmp_path: Path) -> None:
    lines = csv_text([DUPONT, MARTIN, DUPONT], sep=";").splitlines()
    huge = lines[3] + ";" + "x" * 200_000
    text = "\n".join([lines[0] + ";", lines[1] + ";", lines[2] + ";oops", huge])
    path = put(tmp_path, "m.csv", text)
    assert read_member_rows(path).columns == COLUMNS
    assert rows_of(path) == [
        SourceRow(2, DUPONT),
        SourceRow(3, None, "a value in column 15, which has no name"),
        SourceRow(4, None, "line longer than 65,536 characters"),  # skipped, never read whole
    ]


def test_an_unbalanced_quote_that_swallows_rows_refuses_the_file(tmp_path: Path) -> None:
    text = csv_text([DUPONT]) + '285057800608434,MME,"Martin,Élodie\n' + csv_text([DUPONT])
    path = put(tmp_path, "m.csv", text)
    member_file = read_member_rows(path)
    with pytest.raises(InvalidInput, match=r"lines 3-5: .*\(unbalanced quote\?\)"):
        list(member_file)


def test_jsonl_problems_are_per_line(tmp_path: Path) -> None:
    import json

    text = (
        "\n".join(
            [
                json.dumps(DUPONT),
                "",
                '{"nir": "1", broken',
                "[1, 2]",
                json.dumps({**MARTIN, "email": ["a"]}),
                json.dumps({"nir": 185, "x": 1}),
                json.dumps({**MARTIN, "postcode": 69001}),
                '{"nir": "2920969833144',  # cut short
            ]
        )
        + "\n"
    )
    path = put(tmp_path, "m.jsonl", text)
    member_file = read_member_rows(path)
    assert (member_file.fmt, member_file.delimiter, member_file.columns) == ("jsonl", None, COLUMNS)
    rows = list(member_file)
    assert rows[0] == SourceRow(1, DUPONT)
    assert [(row.line, row.problem) for row in rows[1:5]] == [
        (3, "not valid JSON (Expecting property name enclosed in double quotes at column 14)"),
        (4, "not a JSON object: each line must be {...}"),
        (5, "email: expected a string, a number or null"),
        (6, "unknown field 'x'"),
    ]
    assert rows[5] == SourceRow(7, {**MARTIN, "postcode": "69001"})
    assert rows[6].problem == "not valid JSON (Unterminated string starting at column 9)"


def test_half_a_character_in_jsonl_is_that_row_s_problem(cli: Cli, tmp_path: Path) -> None:
    """`"Jo\\ud83d"`, an emoji cut by a program: valid JSON, but no text. It was a traceback
    writing the error report, after the rows before it had been imported."""
    import json

    cut = json.dumps(person(1, first_name="Jo\ud83d"))
    path = put(tmp_path, "m.jsonl", cut + "\n" + json.dumps(person(2)) + "\n")
    report = tmp_path / "rejets.csv"
    result = cli("members", "import", str(path), "--errors", str(report))
    assert result.exit_code == 1, result.output
    assert "Created 1, updated 0, skipped 0 (already there), rejected 1." in result.stdout
    [row] = report_rows(report)
    assert (row["line"], row["reason"]) == (
        "1",
        "first_name: U+D83D is half of a character (a program cut it in two): not text any "
        "file can hold",
    )


def test_jsonl_first_object_acts_as_a_header(tmp_path: Path) -> None:
    path = put(tmp_path, "m.ndjson", '{"nir": "1", "Telephone": "06"}\n')
    with pytest.raises(InvalidInput, match=r"m\.ndjson: unknown fields: telephone$"):
        read_member_rows(path)
    array = put(tmp_path, "m.json", "[\n{}\n]\n")
    with pytest.raises(InvalidInput, match="JSON array is not supported"):
        read_member_rows(array)


@pytest.mark.parametrize("text", ["", "\ufeff", "\n \n\n"])
def test_a_jsonl_file_without_a_line_is_refused_as_an_empty_csv_is(
    tmp_path: Path, text: str
) -> None:
    """A failed step upstream leaves an empty file: "0 created" and exit 0 looked like
    success to the script that ran the import."""
    path = put(tmp_path, "m.jsonl", text)
    with pytest.raises(InvalidInput, match=r"m\.jsonl: the file is empty; one JSON object"):
        read_member_rows(path)


def test_a_jsonl_file_whose_codec_kept_its_bom_is_still_read(tmp_path: Path) -> None:
    path = put(tmp_path, "m.jsonl", '\ufeff{"nir": "1"}\n', encoding="utf-16-le")
    assert read_member_rows(path, encoding="utf-16-le").fmt == "jsonl"


def test_a_csv_given_as_jsonl_is_refused_whole_not_row_by_row(tmp_path: Path) -> None:
    path = put(tmp_path, "m.csv", csv_text([DUPONT]))
    with pytest.raises(InvalidInput, match=r"m\.csv: not JSON Lines: .*--format csv\)$"):
        read_member_rows(path, fmt="jsonl")


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("members.txt", '  \n{"nir": "1"}\n', "jsonl"),
        ("members", csv_text([DUPONT]), "csv"),
        ("members.json", csv_text([DUPONT]), "csv"),  # explicit format wins
    ],
)
def test_format_from_option_extension_or_content(
    tmp_path: Path, name: str, text: str, fmt: str
) -> None:
    path = put(tmp_path, name, text)
    given = "csv" if name.endswith(".json") else None
    assert read_member_rows(path, fmt=given).fmt == fmt


def test_unusable_files_are_refused_in_one_line(tmp_path: Path) -> None:
    cases = {
        tmp_path / "absent.csv": "absent.csv: no such file",
        tmp_path: "not a file",
        put(tmp_path, "empty.csv", "\n \n"): "the file is empty; a header row is expected",
    }
    for path, message in cases.items():
        with pytest.raises(InvalidInput, match=message):
            read_member_rows(path)
    with pytest.raises(InvalidInput, match="unknown format 'xml': use csv, jsonl or xlsx"):
        read_member_rows(put(tmp_path, "m.csv", csv_text([])), fmt="xml")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_reads_back_equal_without_secrets(tmp_path: Path, fmt: str) -> None:
    tricky = {**MARTIN, "last_name": 'O"Neil, dit "Le Sec"', "street": "1 rue A\rB"}
    path = tmp_path / f"export.{fmt}"
    with (
        path.open("w", encoding="utf-8", newline="") as out,
        open_member_writer(out, fmt=fmt) as writer,
    ):
        writer.write(
            {
                **DUPONT,
                "birth_date": date(1985, 5, 12),
                "pin_hash": "$argon2id$SECRET",
                "status": "active",
            }
        )
        writer.write(tricky)
    assert writer.count == 2
    content = path.read_text(encoding="utf-8")
    assert "SECRET" not in content
    assert "Élodie" in content  # not \u00c9 escapes
    assert rows_of(path) == [
        SourceRow(1 if fmt == "jsonl" else 2, {**DUPONT, **ACTIVE}),
        SourceRow(2 if fmt == "jsonl" else 3, {**tricky, **NO_STATUS}),
    ]


def test_jsonl_export_is_compact_with_keys_in_column_order() -> None:
    out = io.StringIO()
    open_member_writer(out, fmt="jsonl").write({"city": "Paris", "nir": "185057800608491"})
    assert out.getvalue() == (
        '{"nir":"185057800608491","civility":null,"last_name":null,'
        '"first_name":null,"birth_date":null,"email":null,"street":null,'
        '"address_complement":null,"postcode":null,"city":"Paris",'
        '"country":null,"address_building":null,"locality":null,"envelope_name":null,'
        '"status":null,"closed_reason":null,"closed_at":null}\n'
    )


def test_empty_csv_export_is_a_header_that_imports(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        open_member_writer(out, fmt="csv").close()
    assert path.read_text() == ",".join(EXPORT_COLUMNS) + "\n"
    assert rows_of(path) == []


def test_error_report_lists_reasons_and_values_and_imports_back(tmp_path: Path) -> None:
    path = tmp_path / "errors.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        count = write_error_report(
            out,
            errors=[
                RowError(
                    7,
                    "nir",
                    "invalid NIR '123'",
                    {**DUPONT, "nir": "123", "pin_hash": "$argon2id$SECRET"},
                ),
                RowError(9, None, "expected 14 fields, found 15", None),
            ],
        )
    assert count == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "line,field,reason," + ",".join(EXPORT_COLUMNS)
    assert lines[1].startswith("7,nir,invalid NIR '123',123,M,Dupont,")
    assert lines[2] == '9,,"expected 14 fields, found 15"' + "," * len(EXPORT_COLUMNS)
    assert "SECRET" not in "\n".join(lines)
    assert rows_of(path)[0] == SourceRow(2, {**DUPONT, "nir": "123", **NO_STATUS})


@pytest.mark.slow
def test_reading_streams_without_holding_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    row = ";".join(DUPONT[c] or "" for c in COLUMNS)
    with path.open("w", encoding="utf-8") as out:
        out.write(";".join(COLUMNS) + "\n")
        for _ in range(200):
            out.write((row + "\n") * 1000)
    # Tracing is slow, so only the opening and the first 20,000 rows are traced: loading
    # the 22 MB file or keeping the rows (about 1 kB each) would show there already.
    tracemalloc.start()
    try:
        rows = iter(read_member_rows(path))
        for _ in range(20_000):
            next(rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000
    assert 20_000 + sum(1 for _ in rows) == 200_000
