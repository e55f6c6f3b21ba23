"""Bulk member files (`members import` / `members export`): reading and writing CSV and JSONL.

This package only knows the file formats; the database side lives in the services. Public
entry points are in `cpms_admin.bulk.formats`.
"""
