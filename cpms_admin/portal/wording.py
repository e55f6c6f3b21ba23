"""What the portal shows the member, in French, worded like the member help pages.

The texts depend only on what the member may know: an unknown NIR, a wrong PIN and a
member without a PIN get the same words, so the portal reveals nothing about who is a member.
"""

from datetime import datetime

from cpms_admin.credentials.lockout import Block, Counters, attempts_left, seconds_until
from cpms_admin.settings import Settings
from cpms_admin.vocabulary import Blocked, PinWeakness

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
    PinWeakness.common: "un code trop courant",
    PinWeakness.birth_date: "votre année et votre mois de naissance",
}


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count > 1 else ''}"


def wait_phrase(seconds: int) -> str:
    """`1 minute`, `2 minutes`, `45 secondes`, `1 heure`: a wait, rounded up."""
    if seconds < 60:
        return _plural(seconds, "seconde")
    minutes = -(-seconds // 60)
    if minutes < 60 or minutes % 60:
        return _plural(minutes, "minute")
    return _plural(minutes // 60, "heure")


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
    """After a wrong PIN or code (`guessed`): attempts left, then the wait or the lock it
    brought. The two share one budget, so they count down together."""
    wrong = _WRONG[guessed]
    if counters.hard_locked:
        return f"{wrong} {LOCKED}"
    left = attempts_left(counters.failures, settings)
    wait = seconds_until(counters.locked_until, now)
    if wait is None:
        return f"{wrong} Attention, il vous reste {_plural(left, 'tentative')}."
    return (
        f"{wrong} {cooldown(wait)} Attention, il vous reste "
        f"{_plural(left, 'tentative')} avant le blocage de votre accès."
    )


def weak_pin(reason: PinWeakness) -> str:
    why = _WEAKNESS[reason]
    return f"Ce mot de passe est trop facile à deviner ({why}). Choisissez-en un autre."
