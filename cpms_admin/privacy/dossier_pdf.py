"""The dossier of `member dossier` as a French PDF: templates/dossier/ (Jinja2, WeasyPrint).

Imported only by `dossier.write_dossier` for a PDF, so that no other command loads
WeasyPrint. The template reads the JSON document itself: the PDF says what the JSON says,
in words a member reads (the labels below), times in Paris time.
"""

import re
from datetime import date, datetime, time, timedelta
from typing import Any

import jinja2

from cpms_admin.credentials.delivery import NOT_SENT
from cpms_admin.credentials.on_its_way import CODE_ON_ITS_WAY, LETTER_ON_ITS_WAY
from cpms_admin.errors import NotReady
from cpms_admin.french import french_date, paris_time
from cpms_admin.letters.claim import NEWER_CODE_SINCE, SUPERSEDED_BY
from cpms_admin.letters.pdf.content import NOT_AFNOR_SIZED, TOO_WIDE
from cpms_admin.letters.recovery import FILES_LOST
from cpms_admin.letters.returns import CAME_BACK, RETURNED_BY_POST, RETURNED_ON
from cpms_admin.letters.voiding import (
    FLAGGED_SINCE_PRINTED,
    LOST_WHILE_PRINTING,
    MOVED_SINCE_PRINTED,
    SUPERSEDED_WHILE_PRINTING,
)
from cpms_admin.mail.compose import INVALID_ADDRESS, LINE_BREAK
from cpms_admin.mail.queue import NO_EMAIL, SENT_BEFORE_A_STOP
from cpms_admin.mail.transport import (
    CANNOT_SEND,
    CANNOT_WRITE,
    CERTIFICATE_REFUSED,
    LOGIN_REFUSED,
    NO_ANSWER,
    NO_ANSWER_IN,
    RECIPIENT_REFUSED,
    SERVER_SAID,
    TLS_FAILED,
)
from cpms_admin.members.nir import format_nir
from cpms_admin.settings import templates_dir
from cpms_admin.vocabulary import AuditAction, CancelReason, RevokeReason

TEMPLATE = "dossier.html"
STYLESHEET = "dossier.css"

LABELS: dict[str, dict[str, str]] = {
    "state": {
        "active": "actif",
        "cooldown": "en attente après des erreurs",
        "locked": "bloqué (à débloquer par le service adhérents)",
        "no_pin": "code personnel à créer",
    },
    "code": {"live": "valide", "expired": "expiré", "used": "utilisé", "revoked": "annulé"},
    "revoked": {
        RevokeReason.superseded: "remplacé par un code plus récent",
        RevokeReason.tries_spent: "trop de codes erronés saisis",
        RevokeReason.pin_reset: "votre code personnel a été réinitialisé",
        RevokeReason.member_closed: "votre compte a été clôturé",
        RevokeReason.email_changed: "envoyé à une adresse e-mail modifiée depuis",
        RevokeReason.mail_failed: "l'e-mail n'a pas pu être envoyé",
        RevokeReason.returned: "le courrier nous est revenu",
        RevokeReason.address_changed: "envoyé à une adresse modifiée depuis",
        RevokeReason.address_flagged: "envoyé à une adresse signalée incorrecte depuis",
        RevokeReason.batch_lost: "le courrier n'a pas été remis à l'imprimeur",
    },
    "channel": {"email": "e-mail", "post": "courrier"},
    "purpose": {"first_login": "première connexion", "pin_reset": "nouveau code personnel"},
    "kind": {
        "welcome": "courrier de bienvenue",
        "security_code": "code de sécurité",
        "pin_reset": "nouveau code personnel",
    },
    "letter": {
        "pending": "en attente d'impression",
        "claimed": "en cours d'impression",
        "printed": "imprimé et envoyé",
        "cancelled": "annulé",
        "failed": "impossible à imprimer",
        "returned": "revenu (n'habite pas à l'adresse indiquée)",
    },
    "mail": {"pending": "en attente", "sent": "envoyé", "failed": "échec", "cancelled": "annulé"},
    "status": {"active": "adhésion en cours", "closed": "adhésion clôturée"},
    "by": {"portal": "vous (Espace Adhérent)", "cpms": "CPMS"},
    "outcome": {
        "ok": "effectué",
        "noop": "sans effet",
        "failed": "échec",
        "mail_failed": "e-mail non parti",
        "superseded": "e-mail non parti : un code plus récent vous était parvenu",
        # A refused attempt on the portal: its reason (PortalReason).
        "wrong_pin": "code personnel erroné",
        "no_pin": "code personnel pas encore créé",
        "closed": "adhésion clôturée",
        "locked": "compte bloqué",
        "cooldown": "attente après des erreurs",
        "captcha_required": "vérification anti-robot demandée",
        "wrong_code": "code de sécurité erroné",
        "dead_code": "code de sécurité expiré ou annulé",
        "code_used": "code de sécurité déjà utilisé",
        "mismatch": "les deux saisies du code personnel diffèrent",
        "weak_pin": "code personnel trop simple",
        "rate_limited": "trop de demandes de code",
        "on_its_way": "un code de sécurité est déjà en route",
        "undeliverable": "courrier impossible : adresse signalée erronée",
    },
    "block": {
        "locked": "compte bloqué",
        "cooldown": "attente après des erreurs",
        "captcha_required": "vérification anti-robot demandée",
    },
    "how": {  # PinChange
        "set": "création avec un code de sécurité",
        "reset": "nouveau code personnel avec un code de sécurité",
        "changed": "changement avec l'ancien code personnel",
    },
    "change": {  # what a bulk run did to the member
        "created": "création",
        "updated": "mise à jour",
        "email": "code de sécurité envoyé par e-mail",
        "letter": "code de sécurité envoyé par courrier",
        "sent": "envoyé",
        "failed": "non envoyé",
        "cancelled": "annulé",
        "pin_hash_sealed": "protection du code personnel renforcée",
        "pseudonymised": "données pseudonymisées",
    },
    "field": {  # a member's field (members/fields.py COLUMNS)
        "nir": "numéro de sécurité sociale",
        "civility": "civilité",
        "last_name": "nom",
        "first_name": "prénom",
        "birth_date": "date de naissance",
        "email": "adresse e-mail",
        "street": "voie",
        "address_complement": "complément d'adresse",
        "postcode": "code postal",
        "city": "ville",
        "country": "pays",
        "address_building": "bâtiment",
        "locality": "lieu-dit",
        "envelope_name": "nom sur l'enveloppe",
    },
    "action": {
        AuditAction.member_add: "inscription",
        AuditAction.member_update: "modification de vos coordonnées",
        AuditAction.member_close: "clôture",
        AuditAction.member_dossier: "édition de ce dossier",
        AuditAction.account_unlock: "déblocage du compte",
        AuditAction.code_issue: "envoi d'un code de sécurité",
        AuditAction.code_revoke: "annulation d'un code de sécurité",
        AuditAction.code_campaign_member: "envoi d'un code de sécurité (campagne)",
        AuditAction.pin_reset: "réinitialisation du code personnel",
        AuditAction.portal_login: "connexion à l'Espace Adhérent",
        AuditAction.portal_set_pin: "création du code personnel",
        AuditAction.portal_change_pin: "changement du code personnel",
        AuditAction.portal_accept_terms: "acceptation des conditions d'utilisation",
        AuditAction.portal_request_code: "demande d'un code de sécurité",
        AuditAction.portal_send_code: "envoi d'un code de sécurité",
        AuditAction.letter_cancel: "annulation d'un courrier",
        AuditAction.letter_failed: "courrier impossible à imprimer",
        AuditAction.letter_returned: "courrier revenu",
        AuditAction.letter_void: "annulation du code de sécurité d'un courrier déjà imprimé",
        AuditAction.members_import_member: "reprise de vos données",
        AuditAction.mail_send_member: "envoi d'un e-mail",
        AuditAction.pins_seal_imported_member: "renforcement de la protection du code personnel",
        AuditAction.purge_closed_members_member: (
            "pseudonymisation de vos données (fin de la durée de conservation)"
        ),
    },
}


def _label(value: Any, table: str) -> str:
    if value is None:
        return "CPMS (automatique)" if table == "by" else "—"
    return LABELS[table].get(str(value), str(value))


def _moment(value: str | None) -> str:
    """`2026-11-23T09:00:00+00:00` -> `23 novembre 2026 à 10 h 00` (Paris)."""
    if not value:
        return "—"
    return _in_words(paris_time(datetime.fromisoformat(value)))


def _in_words(local: datetime) -> str:
    """A Paris time as a member reads it: `23 novembre 2026 à 9 h 05`."""
    return f"{french_date(local.date())} à {local.hour} h {local:%M}"


def _until(value: str | None) -> str:
    """A code's end, as its letter says it: one that ends at midnight (Paris), as a postal
    code does, is valid the whole day before (`5 janvier 2027 inclus`, not `6 janvier à 00 h
    00`, which the member would read as another date)."""
    if not value:
        return "—"
    local = paris_time(datetime.fromisoformat(value))
    if local.time() == time(0):
        return f"{french_date(local.date() - timedelta(days=1))} inclus"
    return _moment(value)


def _day(value: str | None) -> str:
    return french_date(date.fromisoformat(value)) if value else "—"


# Each detail an event on the member may hold (docs/audit.md): its French name, and how its
# values read: a table of LABELS, "moment" (a time), "until" (a code's end), "nir", "reason"
# (french_reason), or None (as they are: numbers, the print house's words).
DETAILS: dict[str, tuple[str, str | None]] = {
    "address_changed_since": ("adresse modifiée depuis", "moment"),
    "address_flagged": ("adresse signalée erronée", None),
    "batch_id": ("n° du lot d'impression", None),
    "block": ("refus", "block"),
    "change": ("opération", "change"),
    "changed": ("modifié", "field"),
    "channel": ("envoi", "channel"),
    "code_id": ("n° du code de sécurité", None),
    "code_revoked": ("code de sécurité annulé", None),
    "codes_revoked": ("codes de sécurité annulés", None),
    "error": ("erreur", "reason"),
    "expires_at": ("valable jusqu'au", "until"),
    "failed_attempts_before": ("erreurs consécutives avant", None),
    "failures": ("erreurs consécutives", None),
    "format": ("format", None),
    "had_pin": ("code personnel existant", None),
    "hard_locked": ("compte bloqué", None),
    "how": ("comment", "how"),
    "kind": ("objet", "kind"),
    "letter_id": ("n° du courrier", None),
    "letter_reused": ("courrier déjà prévu", None),
    "letters_cancelled": ("courriers annulés (n°)", None),
    "lifted_lockout": ("blocage levé", None),
    "nir": ("numéro de sécurité sociale", "nir"),
    "purpose": ("pour", "purpose"),
    "queued_again": ("courrier renvoyé (n°)", None),
    "rehashed": ("protection du code personnel mise à jour", None),
    "returned_as": ("motif du retour", None),
    "revoked": ("code de sécurité annulé", None),
    "revoked_codes": ("codes de sécurité annulés", None),
    "run": ("n° de l'opération groupée", None),
    "state_before": ("état avant", "state"),
    "undeliverable_cleared": ("signalement d'adresse erronée levé", None),
    "version": ("version des conditions d'utilisation", None),
    "welcome_letter_id": ("n° du courrier de bienvenue", None),
}


# What the program writes itself as a reason (a letter's status_reason, its own events' reason,
# why an address is flagged) is in the agents' English; the member reads it in French. Each
# format's `{}` is a value carried over (`\1`, or `{1}` to read it in French too: _VALUE). An
# agent's own words are shown as typed.
_DEAD_CODE = " : son code de sécurité ne fonctionne pas"
_IN_THE_POST = " pendant son impression" + _DEAD_CODE
_CANCELLED = {
    CancelReason.member_closed: "adhésion clôturée",
    CancelReason.has_pin: "courrier de bienvenue, alors que votre code personnel était créé",
    CancelReason.superseded: "remplacé par un courrier plus récent",
    CancelReason.newer_code: "un code de sécurité plus récent a été émis depuis",
    CancelReason.undeliverable: "adresse signalée erronée (un courrier en est revenu)",
    CancelReason.address_changed: "votre adresse a changé",
}
SYSTEM_REASONS: list[tuple[str, str]] = [
    *((reason.text, french) for reason, french in _CANCELLED.items()),
    (NEWER_CODE_SINCE, "un code de sécurité plus récent a été émis le {1}"),
    *(
        (LOST_WHILE_PRINTING.format(reason.text), french + _IN_THE_POST)
        for reason, french in _CANCELLED.items()
    ),
    (MOVED_SINCE_PRINTED, "votre adresse a changé depuis son impression" + _DEAD_CODE),
    (
        FLAGGED_SINCE_PRINTED,
        "votre adresse s'est révélée erronée depuis son impression" + _DEAD_CODE,
    ),
    (SUPERSEDED_BY, r"remplacé par le courrier n° \1"),
    (
        SUPERSEDED_WHILE_PRINTING,
        "son code de sécurité a été remplacé par un code plus récent, donné pendant son impression",
    ),
    (FILES_LOST, r"les fichiers du lot n° \1 ont été perdus avant d'être remis à l'imprimeur"),
    (RETURNED_BY_POST, "NPAI : retourné par La Poste"),
    # After its status, "revenu"; the reason, the print house's or an agent's words, as
    # given, unless it is the program's own default.
    (RETURNED_ON.format("{}", RETURNED_BY_POST), "le {1} : NPAI : retourné par La Poste"),
    (RETURNED_ON, r"le {1} : \2"),
    (CAME_BACK.format("{}", RETURNED_BY_POST), r"le courrier n° \1 est revenu : NPAI"),
    (CAME_BACK, r"le courrier n° \1 est revenu : \2"),
    (NOT_AFNOR_SIZED, r"courrier n° \1 : l'adresse ne respecte pas le format postal (AFNOR)"),
    (
        TOO_WIDE,
        r"courrier n° \1 : une ligne de l'adresse est trop large pour la fenêtre de "
        r"l'enveloppe, même en \2 points",
    ),
    (LETTER_ON_ITS_WAY, "un courrier est déjà en route"),
    (CODE_ON_ITS_WAY, "un code de sécurité est déjà en route"),
    (NO_EMAIL, "aucune adresse e-mail"),
    (SENT_BEFORE_A_STOP, "envoyé, puis utilisé par vous"),
    (INVALID_ADDRESS, r"adresse e-mail invalide : \1"),
    (LINE_BREAK, "en-tête de l'e-mail invalide (saut de ligne)"),
    (NOT_SENT, r"e-mail non envoyé (incident technique : \1)"),
    (CANNOT_SEND, r"envoi impossible par le serveur de messagerie \1 : {2}"),
    (CANNOT_WRITE, r"écriture impossible de l'e-mail dans \1 : {2}"),
    (NO_ANSWER, r"pas de réponse complète en \1 s (délai dépassé)"),
    (NO_ANSWER_IN, r"pas de réponse en \1 s"),
    (RECIPIENT_REFUSED, "destinataire refusé, {1}"),
    (LOGIN_REFUSED, "identification refusée : {1}"),
    (CERTIFICATE_REFUSED, r"certificat TLS refusé (\1)"),
    (TLS_FAILED, r"échec de TLS (\1)"),
    (SERVER_SAID, r"le serveur a répondu \1 \2"),  # its own words, as it gave them
    # The system's words for a mail server out of reach (strerror).
    ("Connection refused", "connexion refusée"),
    ("Connection timed out", "délai de connexion dépassé"),
    ("Connection reset by peer", "connexion coupée par le serveur"),
    ("No route to host", "serveur injoignable"),
    ("Network is unreachable", "réseau injoignable"),
    ("Name or service not known", "nom de serveur inconnu"),
    ("Temporary failure in name resolution", "nom de serveur introuvable pour l'instant"),
]
_SYSTEM_PATTERNS = [
    (re.compile("(.+?)".join(map(re.escape, english.split("{}")))), french)
    for english, french in SYSTEM_REASONS
]


# In a French format, `\1` is the value carried over as it is (a number, a server's words),
# `{1}` the value read as the program's own words in turn (a time, why a mail failed).
_VALUE = re.compile(r"\\(\d)|\{(\d)\}")


_AGENT_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d) CES?T")  # french.agent_time, Paris


def french_reason(text: str | None) -> str:
    """`text` in French when the program wrote it (SYSTEM_REASONS), else as it is. A value a
    format carries as `{N}` is read the same way: an e-mail's failure is the program's words
    around the mail server's ("cannot send ...: recipient refused, server said ..."), whose
    own words are given as they are."""
    if not text:
        return "—"
    if moment := _AGENT_TIME.fullmatch(text):
        return _in_words(datetime.strptime(moment[1], "%Y-%m-%d %H:%M"))
    for pattern, french in _SYSTEM_PATTERNS:
        if found := pattern.fullmatch(text):
            return _VALUE.sub(
                lambda value: (
                    found[int(value[1])] if value[1] else french_reason(found[int(value[2])])
                ),
                french,
            )
    return text


def _details(details: dict[str, Any]) -> str:
    parts = []
    for key, value in details.items():
        name, words = DETAILS.get(key, (key, None))
        parts.append(f"{name} : {_detail(value, words)}")
    return " ; ".join(parts)


def _detail(value: Any, words: str | None) -> str:
    if isinstance(value, bool):
        return "oui" if value else "non"
    if isinstance(value, list):
        return ", ".join(_detail(item, words) for item in value) or "aucun"
    if value is None:
        return "—"
    if words == "moment":
        return _moment(value)
    if words == "until":
        return _until(value)
    if words == "reason":
        return french_reason(str(value))
    if words == "nir":  # the member's own, in full; masked when no member had it
        return format_nir(value) if value.isdigit() else str(value)
    return _label(value, words) if words else str(value)


def _environment() -> jinja2.Environment:
    folder = templates_dir() / "dossier"
    if not (folder / TEMPLATE).is_file() or not (folder / STYLESHEET).is_file():
        raise NotReady(f"dossier template missing in {folder}: reinstall cpms-admin")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    env.filters.update(
        label=_label,
        moment=_moment,
        day=_day,
        until=_until,
        nir=format_nir,
        details=_details,
        reason=french_reason,
    )
    return env


def render_pdf(document: dict[str, Any]) -> bytes:
    """The dossier `document` (`dossier.as_document`) as a PDF."""
    from weasyprint import HTML

    env = _environment()
    folder = templates_dir() / "dossier"
    html = env.get_template(TEMPLATE).render(d=document, stylesheet=STYLESHEET)
    pdf = HTML(string=html, base_url=str(folder)).write_pdf()
    assert isinstance(pdf, bytes)
    return pdf
