"""What the audit log says of a member or a run, read through the CLI as support reads it."""

import json
import re
from pathlib import Path
from typing import Any

from tests.harness import Cli


def audit_of(cli: Cli, nir: str) -> list[dict[str, Any]]:
    """The member's story as `audit list --nir NIR --json` tells it, oldest first."""
    result = cli("--json", "audit", "list", "--nir", nir)
    assert result.exit_code == 0, result.output
    return list(reversed(json.loads(result.stdout)))


def run_event(cli: Cli, action: str) -> dict[str, Any]:
    """The newest bulk run of `action` (`members.import`, ...) as its closing event tells it:
    its counts and outcome, and `run`, the id of the run's own event (which the members'
    events name, `run_id`)."""
    result = cli("--json", "audit", "list", "--action", action, "--limit", "1")
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.stdout)
    assert event["outcome"] != "started", f"the newest {action} run has not ended"
    return dict(event)


def run_id(closing: dict[str, Any]) -> int:
    """The id of the run's own event, from its closing event."""
    return int(closing["details"]["run"])


def run_events(cli: Cli, action: str) -> list[dict[str, Any]]:
    """Every event of the runs of `action` (their own and their closing ones), oldest first."""
    result = cli("--json", "audit", "list", "--action", action, "--all")
    assert result.exit_code == 0, result.output
    return list(reversed(json.loads(result.stdout)))


def assert_chain_intact(cli: Cli) -> dict[str, Any]:
    """`audit verify --json` says the chain is intact (exit 0); its report."""
    result = cli("--json", "audit", "verify")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] is True and report["problem"] is None, report
    return report


def documented_actions() -> dict[str, str]:
    """docs/audit.md's table of the actions: each action's *member* column (`yes`, `no`, or
    `yes` with a footnote: `yes¹` for a portal attempt, which names no member when no member
    has the NIR; `yes²` for a pseudonymised member's event)."""
    text = (Path(__file__).parent.parent / "docs" / "audit.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([a-z_.]+)` \| [^|]+ \| (yes[¹²]?|no) \|$", text, re.M))
