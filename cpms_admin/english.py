"""Counts in the agents' messages, in grammatical English: `1 letter`, `0 letters`,
`2 members are closed`, `1 member is closed`."""


def noun(number: int, singular: str, plural: str | None = None) -> str:
    """The noun for `number` of it: `letter`, `letters`; `plural` when it does not take an
    s (`try`, `tries`)."""
    return singular if number == 1 else plural or singular + "s"


def count(number: int, singular: str, plural: str | None = None) -> str:
    """`number` and its noun: `1 letter`, `2 letters`, `0 letters`, `1,000 e-mails`."""
    return f"{number:,} {noun(number, singular, plural)}"


def agree(number: int, singular: str, plural: str) -> str:
    """The verb (or phrase) for `number` of something: `is`/`are`, `has`/`have`."""
    return singular if number == 1 else plural
