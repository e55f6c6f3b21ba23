"""`cpms-admin portal`: the member portal's own flows, for QA and to reproduce a problem.

Secrets (PIN, code) are read from stdin, one per line (hidden prompts on a terminal),
never from arguments, and never printed.
"""

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cpms_admin.cli.context import AppContext, app_context
from cpms_admin.cli.output import exit_as, print_json, silence_stdout, warn
from cpms_admin.english import count
from cpms_admin.errors import CpmsError, InvalidInput
from cpms_admin.vocabulary import PinSecret

if TYPE_CHECKING:
    from cpms_admin.portal.answers import PortalResult

app = typer.Typer(
    help="The member portal's flows (secrets on stdin, never as arguments).",
    no_args_is_help=True,
)

Nir = Annotated[str, typer.Argument(help="Social security number (spaces, dots allowed).")]
CaptchaOk = Annotated[
    bool, typer.Option("--captcha-ok", help="The member solved the CAPTCHA the portal showed.")
]


def read_secrets(app_: AppContext, *names: str) -> list[str]:
    """One secret per stdin line, or hidden prompts on a terminal, once the database is ready
    and the agent allowed the command: nobody types a PIN only to be refused."""
    app_.engine()
    if sys.stdin.isatty():
        return [str(typer.prompt(name, hide_input=True, err=True)) for name in names]
    values: list[str] = []
    for _ in names:
        line = sys.stdin.readline()
        if not line:
            raise InvalidInput(
                f"expected {count(len(names), 'line')} on stdin ({', '.join(names)}), "
                f"got {len(values)}"
            )
        values.append(line.rstrip("\r\n"))
    return values


def emit_result(app_: AppContext, result: "PortalResult") -> None:
    """The result as JSON or as what the member sees (their message and the page's facts,
    never the internal reason: `--json` has it); exit 0 when ok, else 1 (2 for input)."""
    if app_.json_output:
        print_json(app_, result.as_json())
    else:
        facts = []
        if result.remaining_attempts is not None:
            facts.append(f"{count(result.remaining_attempts, 'attempt')} left")
        if result.retry_after_seconds is not None:
            facts.append(f"retry after {result.retry_after_seconds} s")
        if result.captcha_required:
            facts.append("CAPTCHA required")
        typer.echo(result.message, err=not result.ok)
        if facts:
            typer.echo(f"  ({'; '.join(facts)})", err=not result.ok)
    exit_as(result)


@app.command()
def login(ctx: typer.Context, nir: Nir, captcha_ok: CaptchaOk = False) -> None:
    """Log in with the PIN read from stdin: exit 0 when accepted, 1 when refused.

    A PIN that is not 6 digits is exit 2 and costs no attempt.

    Example: cpms-admin --json portal login 185057800608491   (then type the PIN, or pipe it in)
    """
    from cpms_admin.portal import flows

    app_ = app_context(ctx)
    (pin,) = read_secrets(app_, "PIN")
    with app_.session() as session:
        result = flows.login(
            session,
            nir=nir,
            pin=pin,
            captcha_ok=captcha_ok,
            settings=app_.settings,
            clock=app_.clock,
        )
    emit_result(app_, result)


@app.command("request-code")
def request_code(ctx: typer.Context, nir: Nir) -> None:
    """ "Obtenir mon code de sécurité": a code by e-mail when known, else a postal letter.

    Every NIR gets the same answer and exit 0; `--json` says what happened (`reason`). An
    e-mail that then fails is a warning on stderr; the code it carried is revoked.

    Example: cpms-admin portal request-code 185057800608491
    """
    from cpms_admin.portal import flows

    app_ = app_context(ctx)
    with app_.session() as session:
        request = flows.request_code(session, nir=nir, settings=app_.settings, clock=app_.clock)
        emit_result(app_, request.answer)
        sys.stdout.flush()
        # The answer is whole: a caller reading stdout to its end must not wait for the
        # e-mail, which only a member with an address gets (the same time for all).
        silence_stdout()
        try:
            request.send()
        except CpmsError as exc:  # after the answer: a warning for QA, the same exit for all
            warn(str(exc))


@app.command("set-pin")
def set_pin(
    ctx: typer.Context,
    nir: Nir,
    using: Annotated[
        PinSecret,
        typer.Option(
            "--with",
            help="What line 1 is: the one-time code, the current PIN, or auto "
            "(the code when one is live; QA only: its answers tell members apart).",
        ),
    ] = PinSecret.auto,
    captcha_ok: CaptchaOk = False,
) -> None:
    """Set a new PIN. Stdin: the one-time code or current PIN, the new PIN, the new PIN again.

    A mismatch or a guessable PIN is refused without spending the code. The code that set
    the PIN, sent again, is answered as already used (exit 1) and spends no attempt.

    Example: cpms-admin portal set-pin 185057800608491   (then the code, the new PIN twice)
    """
    from cpms_admin.portal import pin_change

    app_ = app_context(ctx)
    secret, new_pin, confirmation = read_secrets(
        app_, "code or current PIN", "new PIN", "new PIN again"
    )
    notices: list[Callable[[], object]] = []  # the "PIN changed" e-mail, once committed
    with app_.session() as session:
        result = pin_change.set_pin(
            session,
            nir=nir,
            secret=secret,
            new_pin=new_pin,
            confirmation=confirmation,
            using=using,
            captcha_ok=captcha_ok,
            settings=app_.settings,
            clock=app_.clock,
            notify=notices.append,
        )
    emit_result(app_, result)
    sys.stdout.flush()
    silence_stdout()  # the answer is whole: a slow mail server must not hold it
    for send in notices:
        send()


@app.command("accept-terms")
def accept_terms(
    ctx: typer.Context,
    nir: Nir,
    version: Annotated[
        str | None, typer.Option("--version", help="Terms version (default: the current one).")
    ] = None,
    captcha_ok: CaptchaOk = False,
) -> None:
    """Record that the member, logged in with the PIN read from stdin, accepts the Terms of
    Use (CGU), current version only. The PIN counts like a login attempt.

    Example: cpms-admin portal accept-terms 185057800608491   (then type the PIN, or pipe it in)
    """
    from cpms_admin.portal import flows

    app_ = app_context(ctx)
    (pin,) = read_secrets(app_, "PIN")
    with app_.session() as session:
        result = flows.accept_terms(
            session,
            nir=nir,
            pin=pin,
            version=version,
            captcha_ok=captcha_ok,
            settings=app_.settings,
            clock=app_.clock,
        )
    emit_result(app_, result)
