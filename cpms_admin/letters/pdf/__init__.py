"""What a letter looks like: `content` (the words, light and safe to import anywhere),
`render` (each group's page laid out by WeasyPrint, loaded only when a letter is rendered),
`stamp` (each letter's slots restamped from its group's prototype), `pdf_file` (the file
assembled) and `zones` (the envelope's window)."""
