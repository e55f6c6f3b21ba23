"""Postal letters: the queue, the nightly batch that prints each letter exactly once, and
rendering print-ready PDFs.

`batch` runs the night (`guard` locks, `recovery` settles dead runs, `claim` takes the
letters, `jobs` and `pool` render them, `files` publishes); `pdf/` is what a letter looks
like: its `render` loads WeasyPrint only when a letter is actually rendered, so commands
that never print letters start fast.
"""
