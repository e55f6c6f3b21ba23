"""What the portal gets back from its flows, and the answer to a PIN attempt, shared by
logging in and changing the PIN (`portal`, `pin_change`)."""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cpms_admin.credentials.attempts import Attempt
from cpms_admin.credentials.lockout import attempts_left, seconds_until
from cpms_admin.portal import wording
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import Blocked, PortalReason


@dataclass(frozen=True)
class PortalResult:
    """What the portal gets back. `message` is shown to the member; the rest drives the page
    (CAPTCHA, wait) or is for the back-office (`reason`)."""

    ok: bool
    reason: str
    message: str
    remaining_attempts: int | None = None
    retry_after_seconds: int | None = None
    captcha_required: bool = False

    @property
    def exit_code(self) -> int:
        """0 when ok; 2 for what is malformed input (the two new PINs differ), else 1."""
        if self.ok:
            return 0
        return 2 if self.reason == PortalReason.mismatch else 1

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def attempt_result(attempt: Attempt, *, settings: Settings, now: datetime) -> PortalResult:
    """The portal's answer to a guess: a PIN (login, or the current PIN of a change) or a
    one-time code. Both spend the same budget, so both answers give what is left of it."""
    counters = attempt.counters
    if attempt.ok:
        return PortalResult(True, PortalReason.ok, wording.LOGGED_IN)
    if attempt.block is not None:
        left = (
            0
            if attempt.block.reason == Blocked.locked
            else attempts_left(counters.failures, settings)
        )
        return PortalResult(
            False,
            attempt.reason,
            wording.blocked(attempt.block),
            remaining_attempts=left,
            retry_after_seconds=attempt.block.retry_after_seconds,
            captcha_required=counters.captcha_required,
        )
    if not attempt.counted:  # a closed member who typed the right PIN, or an agent's code
        closed = attempt.reason == PortalReason.closed
        return PortalResult(
            False, attempt.reason, wording.CLOSED if closed else wording.CODE_REFUSED
        )
    return PortalResult(
        False,
        attempt.reason,
        wording.wrong_secret(counters, guessed=attempt.guessed, settings=settings, now=now),
        remaining_attempts=attempts_left(counters.failures, settings),
        retry_after_seconds=None
        if counters.hard_locked
        else seconds_until(counters.locked_until, now),
        captcha_required=counters.captcha_required,
    )
