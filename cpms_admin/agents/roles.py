"""The roles and what each may do.

A command needs one duty (see `rights.py`); a role is the set of duties it grants. The three
human roles nest (support < supervisor < admin); the two service roles are narrow: the portal
runs the member's own flows, the nightly job prints, sends and purges.
"""

from enum import StrEnum


class Duty(StrEnum):
    look = "look"  # read members, accounts, letters, the audit log
    help = "help"  # a member on the phone: add, update, unlock, reset, issue a code
    manage = "manage"  # bulk and destructive: close, import, export, campaigns, dossiers
    print = "print"  # the nightly work: letters batch, mail send, returned letters
    retain = "retain"  # purge what the retention rules no longer allow
    administer = "administer"  # agents, pepper rotation, schema upgrades
    portal = "portal"  # the member's own flows (login, codes, PIN change)


class Role(StrEnum):
    support = "support"
    supervisor = "supervisor"
    admin = "admin"
    portal = "portal"  # the portal web site's identity
    nightly = "nightly"  # the cron's identity


GRANTS: dict[Role, frozenset[Duty]] = {
    Role.support: frozenset({Duty.look, Duty.help}),
    Role.supervisor: frozenset({Duty.look, Duty.help, Duty.manage, Duty.print}),
    Role.admin: frozenset(Duty),
    Role.portal: frozenset({Duty.portal}),
    Role.nightly: frozenset({Duty.look, Duty.print, Duty.retain}),
}

# The role to name in "not allowed: ... needs <role>": the least human role with the duty.
_LADDER = (Role.support, Role.supervisor, Role.admin)


def may(role: Role, duty: Duty) -> bool:
    return duty in GRANTS[role]


def least_role_for(duty: Duty) -> Role:
    return next(role for role in _LADDER if duty in GRANTS[role])
