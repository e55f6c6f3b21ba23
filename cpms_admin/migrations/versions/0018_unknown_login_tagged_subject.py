"""unknown NIRs' counters: a row key tagged with the pepper that made it

Revision ID: 0018
Revises: 0017

An unknown NIR's failure counters are keyed by a keyed hash of the NIR. A pepper rotation
gave every NIR a new key, so an unknown NIR's counters started afresh while a member's, on
their account, stayed: whoever had locked both could then tell them apart. The row key now
carries the id of the pepper that made it (`k<id>$`, none for pepper 1, as a code's hash),
so that the counters are found under an older pepper after a rotation and moved to the
current one, and `pepper status` counts them under the pepper they need. 64 characters no
longer hold a tag. The keys made so far are the current pepper's (those of an older one
could not be found since its rotation): they are tagged with it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _subject_length(64, 80)
    current = _current_pepper()
    if current > 1:
        op.execute(
            sa.text("UPDATE unknown_login SET subject = :tag || subject").bindparams(
                tag=f"k{current}$"
            )
        )


def downgrade() -> None:
    # 0017 reads the current pepper's keys untagged; older peppers' it could never find.
    current = _current_pepper()
    tag = f"k{current}$"
    if current > 1:
        op.execute(
            sa.text(
                "UPDATE unknown_login SET subject = substr(subject, :start) "
                "WHERE substr(subject, 1, :length) = :tag"
            ).bindparams(start=len(tag) + 1, length=len(tag), tag=tag)
        )
    op.execute("DELETE FROM unknown_login WHERE length(subject) > 64")
    _subject_length(80, 64)


def _subject_length(before: int, after: int) -> None:
    # PostgreSQL changes the column in place; SQLite copies the table (a batch).
    with op.batch_alter_table("unknown_login") as batch_op:
        batch_op.alter_column(
            "subject",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=before),
            type_=sqlmodel.sql.sqltypes.AutoString(length=after),
            existing_nullable=False,
        )


def _current_pepper() -> int:
    found = op.get_bind().execute(sa.text("SELECT max(id) FROM pepper_key")).scalar()
    return int(found or 1)
