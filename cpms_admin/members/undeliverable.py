"""An address the post could not deliver to: the flag a returned letter (NPAI) sets, and the
one rule every way of sending a letter keeps: no letter goes to a flagged address until an
agent updates it (`member update`, or `--address-confirmed` once the member confirmed it)."""

from datetime import datetime
from typing import Any

from cpms_admin.clock import iso
from cpms_admin.errors import Refused
from cpms_admin.french import agent_time
from cpms_admin.members.nir import format_nir
from cpms_admin.models import Member

NPAI = "NPAI (n'habite pas à l'adresse indiquée)"


def is_flagged(member: Member) -> bool:
    return member.undeliverable_at is not None


def fix(member: Member) -> str:
    """The commands that lift the flag."""
    return (
        f"cpms-admin member update {member.nir} --street ... --postcode ... --city ... "
        f"(the corrected address), or cpms-admin member update {member.nir} "
        "--address-confirmed once the member confirmed it"
    )


def describe(member: Member) -> str:
    return (
        f"address undeliverable since {agent_time(member.undeliverable_at)}: "
        f"{member.undeliverable_reason}"
    )


def view(member: Member) -> dict[str, Any] | None:
    """What `member show --json` and `account status --json` say of the flag."""
    if not is_flagged(member):
        return None
    return {
        "since": iso(member.undeliverable_at),
        "reason": member.undeliverable_reason,
        "fix": fix(member),
    }


def refuse_if_flagged(member: Member) -> None:
    """Refused (exit 1) when no letter may be sent to the member's address."""
    if is_flagged(member):
        by_email = (
            "send the code by e-mail (--channel email)"
            if member.email
            else f"add an e-mail address (cpms-admin member update {member.nir} --email "
            "ADDRESS) and send the code by e-mail"
        )
        raise Refused(
            f"member {format_nir(member.nir)}: no letter can be sent, {describe(member)}; "
            f"update it: {fix(member)}; or {by_email}"
        )


def flag(member: Member, *, reason: str, now: datetime) -> None:
    member.undeliverable_at, member.undeliverable_reason = now, reason[:300]


def clear(member: Member) -> bool:
    """Lift the flag; whether it was set."""
    flagged = is_flagged(member)
    member.undeliverable_at = member.undeliverable_reason = None
    return flagged
