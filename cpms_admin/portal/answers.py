"""What the portal answers: the result of each flow (`PortalResult`, with the internal
`reason` and its exit code) and the French text the member reads, worded like the member
help pages.

The texts depend only on what the member may know: an unknown NIR, a wrong PIN and a
member without a PIN get the same words, so the portal reveals nothing about who is a member.
"""

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cpms_admin.credentials.attempts import Attempt
from cpms_admin.credentials.lockout import (
    Block,
    Counters,
    attempts_left,
    cooldown_after,
    seconds_until,
)
from cpms_admin.errors import InvalidInput, Refused
from cpms_admin.french import plural, wait_phrase
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import Blocked, PinWeakness, PortalReason

GET_CODE = "« Obtenir mon code de sécurité »"
LOGGED_IN = "Vous êtes connecté(e) à votre Espace Adhérent."
CLOSED = (
    "Votre Espace Adhérent n'est plus accessible. Pour toute question, contactez le service "
    "clients."
)
LOCKED = (
    "Votre accès est bloqué à la suite de trop nombreuses tentatives. Pour le débloquer, "
    "contactez le service clients."
)
CAPTCHA = (
    "Par mesure de sécurité, veuillez recopier les caractères de l'image (CAPTCHA) avant "
    "de valider."
)
CODE_REFUSED = (
    "Code de sécurité erroné ou expiré. Vérifiez les 6 chiffres reçus ou demandez un nouveau "
    f"code ({GET_CODE})."
)
# The member's own code, typed again once it set their PIN: only its holder can get this.
CODE_USED = (
    "Ce code de sécurité a déjà été utilisé. Connectez-vous avec le mot de passe que vous avez "
    f"créé, ou demandez un nouveau code ({GET_CODE})."
)
MISMATCH = "Les deux mots de passe saisis ne sont pas identiques. Veuillez les saisir à nouveau."
PIN_SAVED = (
    "Votre modification a été prise en compte. Vous pouvez vous connecter avec votre "
    "nouveau mot de passe."
)
# The one answer to every code request, whoever asks and whatever happens to it: it must not
# tell a member from an unknown NIR, an e-mail from a letter, a sent code from a refused one.
CODE_REQUESTED = (
    "Votre demande a bien été prise en compte. Si votre adresse e-mail est connue du CPMS, "
    "un e-mail contenant votre code de sécurité vous a été envoyé : si vous ne l'avez pas "
    "reçu, vérifiez dans vos courriers indésirables ou vos spams. Sinon, un courrier postal "
    "contenant votre code de sécurité va vous être envoyé (sous 48 heures à une semaine)."
)
TERMS_ACCEPTED = "Vous avez accepté les Conditions Générales d'Utilisation."

# The reasons of credentials.pins.pin_weakness, as the member reads them.
_WEAKNESS = {
    PinWeakness.repeated_digit: "un seul chiffre répété",
    PinWeakness.consecutive: "une suite de chiffres consécutifs",
    PinWeakness.repeated_group: "un groupe de chiffres répété",
    PinWeakness.nearly_one_digit: "un seul chiffre répété, à un près",
    PinWeakness.doubled_digits: "trois chiffres doublés",
    PinWeakness.counting_pairs: "des nombres qui se suivent (01 02 03)",
    PinWeakness.keypad_lines: "deux lignes du clavier",
    PinWeakness.common: "un code trop courant",
    PinWeakness.birth_date: "votre année et votre mois de naissance",
}


def cooldown(seconds: int) -> str:
    return (
        f"Par mesure de sécurité, vous devez patienter {wait_phrase(seconds)} avant une "
        "nouvelle tentative."
    )


def blocked(block: Block) -> str:
    if block.reason == Blocked.cooldown:
        return cooldown(block.retry_after_seconds or 1)
    return CAPTCHA if block.reason == Blocked.captcha_required else LOCKED


_WRONG = {"pin": "Mot de passe erroné.", "code": "Code de sécurité erroné ou expiré."}


def wrong_secret(counters: Counters, *, guessed: str, settings: Settings, now: datetime) -> str:
    """After a wrong PIN or code (`guessed`): the wait it brought, if any, then the attempts
    left before what comes next, named: the first wait while none was imposed yet, then the
    block of the account. The two share one budget, so they count down together."""
    wrong = _WRONG[guessed]
    if counters.hard_locked:
        return f"{wrong} {LOCKED}"
    wait = seconds_until(counters.locked_until, now)
    now_wait = f" {cooldown(wait)}" if wait is not None else ""
    return f"{wrong}{now_wait} {attempts_before(counters.failures, settings)}"


def attempts_before(failures: int, settings: Settings) -> str:
    """`Attention, il vous reste 2 tentatives avant de devoir patienter 1 minute.` or `...
    avant le blocage de votre accès.`: what `attempts_left` counts down to, said."""
    left = plural(attempts_left(failures, settings), "tentative")
    first_wait = cooldown_after(settings.lockout_max_failures, settings)
    before_any_wait = failures < settings.lockout_max_failures < settings.lockout_hard_after
    if before_any_wait and first_wait is not None:
        return (
            f"Attention, il vous reste {left} avant de devoir patienter "
            f"{wait_phrase(math.ceil(first_wait.total_seconds()))}."
        )
    return f"Attention, il vous reste {left} avant le blocage de votre accès."


def weak_pin(reason: PinWeakness) -> str:
    why = _WEAKNESS[reason]
    return f"Ce mot de passe est trop facile à deviner ({why}). Choisissez-en un autre."


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
        """0 when ok; malformed input's when the two new PINs differ, else a refusal's."""
        if self.ok:
            return 0
        return (InvalidInput if self.reason == PortalReason.mismatch else Refused).exit_code

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def attempt_result(attempt: Attempt, *, settings: Settings, now: datetime) -> PortalResult:
    """The portal's answer to a guess: a PIN (login, or the current PIN of a change) or a
    one-time code. Both spend the same budget, so both answers give what is left of it."""
    counters = attempt.counters
    if attempt.ok:
        return PortalResult(True, PortalReason.ok, LOGGED_IN)
    if attempt.block is not None:
        left = (
            0
            if attempt.block.reason == Blocked.locked
            else attempts_left(counters.failures, settings)
        )
        return PortalResult(
            False,
            attempt.reason,
            blocked(attempt.block),
            remaining_attempts=left,
            retry_after_seconds=attempt.block.retry_after_seconds,
            captcha_required=counters.captcha_required,
        )
    if attempt.reason == PortalReason.code_used:  # costs nothing: what is left is unchanged
        return PortalResult(
            False,
            attempt.reason,
            CODE_USED,
            remaining_attempts=attempts_left(counters.failures, settings),
            captcha_required=counters.captcha_required,
        )
    if not attempt.counted:  # a closed member who typed the right PIN, or an agent's code
        closed = attempt.reason == PortalReason.closed
        return PortalResult(False, attempt.reason, CLOSED if closed else CODE_REFUSED)
    return PortalResult(
        False,
        attempt.reason,
        wrong_secret(counters, guessed=attempt.guessed, settings=settings, now=now),
        remaining_attempts=attempts_left(counters.failures, settings),
        retry_after_seconds=None
        if counters.hard_locked
        else seconds_until(counters.locked_until, now),
        captcha_required=counters.captcha_required,
    )
