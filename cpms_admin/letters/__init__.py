"""Postal letters carrying a one-time code: their content, and rendering them as print-ready PDF.

`content` is light and safe to import anywhere; `render` loads WeasyPrint only when a letter is
actually rendered, so commands that never print letters start fast.
"""
