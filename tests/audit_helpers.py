"""What the audit log says of a member or a run, read through the CLI as support reads it."""

import json
from typing import Any

from tests.harness import Cli


def audit_of(cli: Cli, nir: str) -> list[dict[str, Any]]:
    """The member's story as `audit list --nir NIR --json` tells it, oldest first."""
    result = cli("--json", "audit", "list", "--nir", nir)
    assert result.exit_code == 0, result.output
    return list(reversed(json.loads(result.stdout)))


def run_event(cli: Cli, action: str) -> dict[str, Any]:
    """The newest summary event of the bulk runs of `action` (`members.import`, ...)."""
    result = cli("--json", "audit", "list", "--action", action, "--limit", "1")
    assert result.exit_code == 0, result.output
    (event,) = json.loads(result.stdout)
    return dict(event)
