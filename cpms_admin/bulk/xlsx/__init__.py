"""Excel workbooks: `read` streams a sheet's rows (`book` finds the sheet and its shared
strings, `sheet` parses it with expat), `write` writes an export as a workbook."""
