"""Security primitives: the pepper, PIN hashing and rules, one-time codes. No database here."""
