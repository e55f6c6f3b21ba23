"""Plain factory functions for tests: valid NIRs and members with overridable fields."""

import itertools
from typing import Any

from sqlmodel import Session

from cpms_admin.members.fields import validate_member_fields
from cpms_admin.members.records import add_member
from cpms_admin.models import Member

_serial = itertools.count(1)


def make_nir(
    serial: int | None = None,
    *,
    sex: int = 1,
    year: int = 85,
    month: int = 5,
    department: str = "75",
) -> str:
    """A valid NIR: the key is computed, so each serial gives a distinct member.

    Serial 6084 is commune 006, order number 084. Neither is ever 000 in a real NIR: the
    serials below 1000 take commune 998, the multiples of 1000 commune 999 (the thousands as
    order number), which serials below 998,000 reach no other way."""
    n = next(_serial) if serial is None else serial
    if not 1 <= n < 998_000:
        raise ValueError(f"serial {n} is not between 1 and 997,999")
    thousands, order = divmod(n, 1000)
    commune = 998 if not thousands else 999 if not order else thousands
    order = order or thousands
    body = f"{sex}{year:02d}{month:02d}{department}{commune:03d}{order:03d}"
    numeric = body.replace("2A", "19").replace("2B", "18")
    return f"{body}{97 - int(numeric) % 97:02d}"


def member_values(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "nir": make_nir(),
        "civility": "MME",
        "last_name": "Martin",
        "first_name": "Hélène",
        "email": "helene.martin@example.org",
        "street": "12 rue de la République",
        "postcode": "69002",
        "city": "Lyon",
        "country": "FR",
    }
    values.update(overrides)
    return values


def make_member(session: Session, *, welcome: bool = True, **overrides: Any) -> Member:
    fields = validate_member_fields(member_values(**overrides))
    return add_member(session, fields=fields, agent="factory", welcome=welcome)


def snapshot(session: Session) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to check that a refused command changed nothing."""
    from sqlalchemy import text
    from sqlmodel import SQLModel

    session.expire_all()
    return {
        table.name: sorted(
            (tuple(row) for row in session.execute(text(f'SELECT * FROM "{table.name}"'))),
            key=repr,
        )
        for table in SQLModel.metadata.sorted_tables
    }
