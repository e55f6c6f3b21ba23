"""Which duty each command needs: the one table a security officer reads (README, "Agents and
rights"). A command missing here is refused to everyone (tests/test_agents.py checks that
every command of the CLI is listed)."""

from cpms_admin.agents.roles import Duty

COMMAND_DUTIES: dict[str, Duty] = {
    "doctor": Duty.look,
    "db status": Duty.look,
    "db upgrade": Duty.administer,
    "member show": Duty.look,
    "member list": Duty.look,
    "member add": Duty.help,
    "member update": Duty.help,
    "member close": Duty.manage,
    "member dossier": Duty.manage,
    "account status": Duty.look,
    "account unlock": Duty.help,
    "pin reset": Duty.help,
    "code issue": Duty.help,
    "code campaign": Duty.manage,
    "portal login": Duty.portal,
    "portal request-code": Duty.portal,
    "portal set-pin": Duty.portal,
    "portal accept-terms": Duty.portal,
    "members import": Duty.manage,
    "members export": Duty.manage,
    "mail send": Duty.print,
    "letters list": Duty.look,
    "letters preview": Duty.look,
    "letters batch": Duty.print,
    "letters returned": Duty.print,
    "audit list": Duty.look,
    "audit verify": Duty.look,
    "agent list": Duty.look,
    "agent add": Duty.administer,
    "agent disable": Duty.administer,
    "pepper status": Duty.look,
    "pepper rotate": Duty.administer,
    "purge": Duty.retain,
}
