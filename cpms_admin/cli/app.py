"""The root command: global options, the sub-commands, and the one error boundary."""

import json
import os
import re
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from cpms_admin import __version__
from cpms_admin.audit import AGENT_MAX_LENGTH, clean_name
from cpms_admin.cli import signals
from cpms_admin.cli.commands import (
    account,
    agent,
    audit,
    code,
    db,
    letters,
    mail,
    member,
    members,
    pepper,
    pin,
    portal,
    purge,
)
from cpms_admin.cli.context import AppContext
from cpms_admin.cli.output import (
    error,
    print_json,
    silence_stdout,
    stdout_failed,
    watch_stdout,
)
from cpms_admin.errors import CpmsError, unreachable
from cpms_admin.members.nir import PRINTED_GROUP_COUNT, is_printed_nir
from cpms_admin.settings import load_settings

# Set in ctx.meta by the boundary: whether the command line only asks for help, and the
# configuration error the root callback put off because of that.
HELP_ASKED = "cpms.help_asked"
DEFERRED = "cpms.deferred_error"
# The global options that take a value (`--json` is the other one typed after the command).
GLOBAL_VALUED = ("--db", "--agent")


class CommandGroup(TyperGroup):
    """A group of commands that, asked for one a group of a like name holds (`member import`)
    or for a group's command at the top (`unlock`), says where it is: `No such command
    'import'. Did you mean 'members import'?`."""

    def resolve_command(  # type: ignore[override]
        self, ctx: typer.Context, args: list[str]
    ) -> tuple[str | None, Any, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:
            elsewhere = _holders(ctx, args[0]) if args and _is_usage_problem(exc) else []
            if not elsewhere:
                raise
            choices = [f"'{group} {args[0]}'" for group in elsewhere]
            listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if choices[1:] else choices[0]
            ctx.fail(f"No such command {args[0]!r}. Did you mean {listed}?")


class ErrorBoundary(CommandGroup):
    """Turns expected failures into one line on stderr and the exit code of docs/scripting.md."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        # The root callback (which reads the configuration) runs before a sub-command parses
        # its own `--help`; help must never need configuration, so note whether it is asked.
        ctx.meta[HELP_ASKED] = _asks_for_help(self, ctx, args)
        return super().parse_args(ctx, _globals_first(ctx, _nirs_whole(args)))

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, standalone_mode: bool = True, **extra: Any
    ) -> Any:
        """Usage errors as one line, like every other error: `Error: No such option: --x
        (see 'cpms-admin member list --help')`, exit 2."""
        if not standalone_mode:
            return super().main(args, standalone_mode=False, **extra)
        words = list(sys.argv[1:] if args is None else args)
        asks_json = "--json" in words[: _options_end(words)]
        if (undecodable := _not_utf8(words)) is not None:
            _report_failure(
                f"{undecodable} is not UTF-8 text (typed on a terminal in another encoding, or "
                "a file name written by one): type it again on a UTF-8 terminal, or rename the "
                "file",
                2,
                as_json=asks_json,
            )
            sys.exit(2)
        try:
            result = super().main(args, standalone_mode=False, **extra)
        except typer.Abort as exc:
            # Click's prompts turn Ctrl-C into Abort: an interruption still, as anywhere else
            # (130); an input that ended (no PIN on stdin) is refused, 1.
            interrupted = exc.__context__
            message, code = (
                signals.described(interrupted)
                if isinstance(interrupted, KeyboardInterrupt)
                else ("aborted", 1)
            )
            _report_failure(message, code, as_json=asks_json)
            sys.exit(code)
        except OSError as exc:
            # (A reader that stopped early, `| head`, is Typer's: a quiet exit 1.)
            if not stdout_failed(exc):
                raise
            silence_stdout()
            error(f"cannot write to stdout: {exc.strerror or exc}")  # no JSON: stdout failed
            sys.exit(2)
        except Exception as exc:
            if not _is_usage_problem(exc):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # a group typed alone: its help
                exc.show()  # type: ignore[attr-defined]
                if asks_json:
                    missing = f"Missing command. (see '{exc.ctx.command_path} --help')"  # type: ignore[attr-defined]
                    print_json(None, {"error": missing, "exit_code": exc.exit_code})  # type: ignore[attr-defined]
            else:
                _report_failure(_one_line(exc), exc.exit_code, as_json=asks_json)  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        stop = signals.requested()
        if stop is not None and result in (None, 0):  # dropped where it was raised
            message, code = signals.described(stop)
            _report_failure(message, code, as_json=False)
            sys.exit(code)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:
            failure = _expected_failure(ctx, exc)
            if failure is None:
                raise
            message, exit_code = failure
            app_ = ctx.obj if isinstance(ctx.obj, AppContext) else None
            if app_ is None:  # the command could not start (its configuration is wrong)
                as_json = bool(ctx.params.get("json_output"))
            else:
                as_json = app_.json_output and not app_.stdout_taken
            _report_failure(message, exit_code, as_json=as_json)
            raise typer.Exit(exit_code) from None
        finally:
            if isinstance(ctx.obj, AppContext):
                ctx.obj.close()


def _expected_failure(ctx: typer.Context, exc: BaseException) -> tuple[str, int] | None:
    """What an expected failure tells the user, and its exit code; None for a bug (or one of
    Click's own exits, which carry their code), to be raised as it is."""
    if isinstance(exc, CpmsError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return signals.described(exc)
    deferred = ctx.meta.get(DEFERRED)
    if isinstance(deferred, CpmsError) and not hasattr(exc, "exit_code"):
        # A command ran without its configuration ("--help" was an option's value): the
        # configuration error is the one to report.
        return str(deferred), deferred.exit_code
    if isinstance(exc, PermissionError):
        unopened = unreachable(exc)
        return str(unopened), unopened.exit_code
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        from cpms_admin.db import database_failure

        failure = database_failure(exc)
        return str(failure), failure.exit_code
    return None


def _report_failure(message: str, exit_code: int, *, as_json: bool) -> None:
    """One `Error:` line on stderr; and with `as_json` (`--json`, when the command printed no
    document of its own before failing) the error as the one JSON document on stdout,
    `{"error": ..., "exit_code": N}`, so that a script always has a document to read. A long
    run of hex digits is hidden: a refusal quoting a file's first line (a copy of the pepper
    file given as members to import) would print the pepper."""
    message = _KEY_LIKE.sub(_hide_key, message)
    error(message)
    if as_json:
        print_json(None, {"error": message, "exit_code": exit_code})


app = typer.Typer(
    cls=ErrorBoundary,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Back-office for the accounts of the CPMS member portal.",
)
# Each group is named after its module (`cli/commands/members.py` is `members`).
for group in (db, member, audit, account, pin, code, portal, members, mail, letters, pepper, agent):
    app.add_typer(group.app, name=group.__name__.rpartition(".")[2], cls=CommandGroup)
code.app.command("campaign")(code.campaign)
app.command()(db.doctor)
app.command()(purge.purge)


def _show_version(ctx: typer.Context, value: bool) -> None:
    """`--version`; with `--json` (which `_globals_first` puts first, and which is eager too, so
    it is read by then) as a JSON document."""
    if value:
        if ctx.params.get("json_output"):
            typer.echo(json.dumps({"version": __version__}))
        else:
            typer.echo(f"cpms-admin {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="CPMS_DATABASE_URL",
            help="SQLAlchemy database URL.",
            show_default="sqlite:///data/cpms.db",
        ),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            "--agent",
            envvar="CPMS_AGENT",
            help="A label recorded beside who you are (a ticket, a script's name). Who you "
            "are comes from the system: the OS user, or the database login role.",
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", is_eager=True, help="Machine output: one JSON document on stdout."),
    ] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    """Find members, see why they cannot log in, fix it; print the nightly letters."""
    preset = ctx.obj if isinstance(ctx.obj, dict) else {}  # tests may inject a clock
    try:
        source = ctx.get_parameter_source("db_url")
        if source is None or source.name != "COMMANDLINE":
            db_url = None  # from CPMS_DATABASE_URL: read, and named, as every variable
        settings = load_settings(database_url=db_url, named={"database_url": "--db"})
        # Most runs have no SMTP URL: no need to load the module. `doctor` checks it itself,
        # among its other checks.
        if settings.smtp_url is not None and ctx.invoked_subcommand != "doctor":
            from cpms_admin.mail.transport import check_smtp_url

            check_smtp_url(settings.smtp_url)
        if label is not None:
            label = clean_name(
                label, what="the label (--agent, CPMS_AGENT)", max_length=AGENT_MAX_LENGTH
            )
    except CpmsError as exc:
        if not ctx.meta.get(HELP_ASKED):
            raise
        ctx.meta[DEFERRED] = exc
        return
    ctx.obj = AppContext(
        settings=settings,
        label=label,
        json_output=json_output,
        **{key: preset[key] for key in ("clock",) if key in preset},
    )


def _asks_for_help(group: TyperGroup, ctx: typer.Context, args: list[str]) -> bool:
    """Whether the command line ends in help: `--help`, or a group named without a command."""
    words = args[: _options_end(args)]
    if any(word in ctx.help_option_names for word in words):
        return True
    command: object = group
    for word in words:
        if isinstance(command, TyperGroup) and word in command.commands:
            command = command.commands[word]
    return isinstance(command, TyperGroup)


def _is_usage_problem(exc: Exception) -> bool:
    """Click's own errors (bad option, missing argument...), known without importing Click,
    which Typer vendors: they format their message and carry their exit code."""
    return callable(getattr(exc, "format_message", None)) and hasattr(exc, "exit_code")


def _holders(ctx: typer.Context, name: str) -> list[str]:
    """The groups holding a command `name`: any at the top, else those named like the group
    typed (`member` for `members`; `mail send` is no answer to `code send`)."""
    root = ctx.find_root()
    groups = root.command.commands if isinstance(root.command, TyperGroup) else {}
    holders = [
        group_name
        for group_name, group in groups.items()
        if isinstance(group, TyperGroup) and name in group.commands
    ]
    return holders if ctx is root else get_close_matches(ctx.info_name or "", holders, cutoff=0.8)


# What a pepper looks like (`pepper rotate` writes 64 hex digits), or a key or hash: no message
# quotes one for a good reason. Random, it mixes digits and letters; a name of 100 a's does not.
_KEY_LIKE = re.compile(r"[0-9a-fA-F]{32,}")


def _hide_key(found: re.Match[str]) -> str:
    run = found[0]
    random_looking = any(c.isdigit() for c in run) and any(not c.isdigit() for c in run)
    return "[hex digits hidden]" if random_looking else run


# Six digits alone, in a usage error: what a PIN or a security code looks like (both are read
# from stdin), typed where an argument goes.
_PIN_OR_CODE = re.compile(r"(?<!\w)\d{6}(?!\w)")


def _one_line(exc: Exception) -> str:
    message = exc.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
    # Click lists a missing option's choices one a line: "Choose from:\n\tsupport,\n\t...".
    message = " ".join(message.split())
    message = _PIN_OR_CODE.sub("******", message)  # a PIN typed as an argument: not logged
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def _not_utf8(words: Sequence[str]) -> str | None:
    """The first argument that is not UTF-8 text, as it can be shown (`'h\\xe9l\\xe8ne'`), or
    None. Python hands such bytes over as lone surrogates, which no output, database or
    audit event can take: refused here, before anything runs."""
    for word in words:
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            shown = word.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return f"the argument '{shown}'"
    return None


def _options_end(words: Sequence[str]) -> int:
    """Where the words the command line reads as options end: at `--`, whose words after it
    are the command's own arguments, else at the end."""
    return words.index("--") if "--" in words else len(words)


def _globals_first(ctx: typer.Context, args: list[str]) -> list[str]:
    """The global options are typed anywhere, and agents type them last (`audit list --json`,
    `account unlock NIR --reason "called" --agent INC-42`): moved before the command, in
    their order. Words after `--` are left alone. A value that is missing, or is an option
    (`--agent --json`: an empty variable), is a usage error, not a label."""
    end = _options_end(args)
    moved: list[str] = []
    rest: list[str] = []
    words = iter(args[:end])
    for word in words:
        if word == "--json" or word.startswith(tuple(f"{name}=" for name in GLOBAL_VALUED)):
            moved.append(word)
        elif word in GLOBAL_VALUED:
            value = next(words, None)
            if value is not None and not value.startswith("--"):
                moved.extend([word, value])
            elif ctx.resilient_parsing:  # completing the value: the words as typed
                rest.extend([word] if value is None else [word, value])
            else:
                ctx.fail(f"Option '{word}' requires an argument.")
        else:
            rest.append(word)
    return [*moved, *rest, *args[end:]]


def _nirs_whole(args: list[str]) -> list[str]:
    """A NIR copied from a table and pasted unquoted (`member show 1 85 05 78 006 084 91`)
    reaches us as seven words: joined back into one, as quoted it would have been. Words
    after `--` are left alone, as `_globals_first` leaves them."""
    end = _options_end(args)
    words = list(args[:end])
    at = 0
    while at + PRINTED_GROUP_COUNT <= len(words):
        if is_printed_nir(words[at : at + PRINTED_GROUP_COUNT]):
            words[at : at + PRINTED_GROUP_COUNT] = [" ".join(words[at : at + PRINTED_GROUP_COUNT])]
        at += 1
    return [*words, *args[end:]]


def main() -> None:
    """Run the command line (the installed command goes through `cpms_admin.cli.main`)."""
    _owner_only_by_default()
    _standard_streams_open()
    watch_stdout()
    app(prog_name="cpms-admin")


def _standard_streams_open() -> None:
    """A standard stream closed by the caller (`>&-`) is /dev/null: otherwise the first file
    opened (the database) would take its descriptor, and Python has no stream to print to."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)  # takes `fd` itself when it is lowest
            if devnull != fd:
                os.dup2(devnull, fd)  # inheritable, as the stream it stands for
                os.close(devnull)
            else:
                os.set_inheritable(fd, True)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _owner_only_by_default() -> None:
    """Whatever this process creates holds personal data or guards it, including files made
    by code that sets no mode of its own (SQLite makes the database, its -wal and -shm as the
    umask allows): owner-only, before anything runs. The writers also set their modes, for
    the portal, which imports this package under its own umask."""
    os.umask(0o077)
