"""Bulk work on members: `members import` and `members export` (CSV and JSONL), and code
campaigns. `formats` knows the files; `importer`, `export` and `campaign` are the runs."""
