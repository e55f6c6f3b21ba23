"""What every command gets: settings, who is acting, output mode, clock and a lazy engine."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from sqlalchemy import Engine
from sqlmodel import Session

from cpms_admin import audit
from cpms_admin.audit_chain.seal import keyed
from cpms_admin.clock import Clock, system_clock
from cpms_admin.db import check_schema, make_engine, release, session_scope, sqlite_path
from cpms_admin.errors import InvalidInput, NotReady
from cpms_admin.faults import failpoint
from cpms_admin.pepper import Peppers, pepper_file_path
from cpms_admin.private_files import reserved
from cpms_admin.settings import Settings

if TYPE_CHECKING:  # agents.registry is imported when a command opens the database
    from cpms_admin.agents.registry import Actor


@dataclass
class AppContext:
    settings: Settings
    label: str | None  # --agent / CPMS_AGENT: recorded beside the agent, never instead of it
    command: str = ""  # e.g. "member show", set by `app_context`
    json_output: bool = False
    clock: Clock = system_clock
    # Set once the command writes its result on stdout: an error after that prints no JSON
    # document of its own (cli/app.py), so stdout stays one document.
    stdout_taken: bool = False
    _engine: Engine | None = field(default=None, repr=False)
    _actor: "Actor | None" = field(default=None, repr=False)
    _bound: ExitStack = field(default_factory=ExitStack, repr=False)

    def __post_init__(self) -> None:
        """No file the command writes may take the name of one it runs on."""
        database = sqlite_path(self.settings.database_url)
        if database is not None:
            self._bound.enter_context(reserved(database, "the database", with_companions=True))
        try:
            pepper = pepper_file_path(self.settings)
        except NotReady:  # no pepper anywhere: the commands that need one say so
            pepper = None
        if pepper is not None:
            self._bound.enter_context(reserved(pepper, "the pepper file"))

    def engine(self) -> Engine:
        """The engine, created on first use, checked to be at the latest schema, and the
        acting agent checked to be allowed this command (Refused, exit 1, before anything),
        and again as each of its transactions begins."""
        if self._engine is None:
            from cpms_admin.agents.registry import acting, authorize
            from cpms_admin.agents.rights import COMMAND_DUTIES
            from cpms_admin.agents.roles import Duty

            engine = make_engine(self.settings.database_url)
            check_schema(engine)
            with session_scope(engine, read_only=True) as session:
                self._actor = authorize(session, command=self.command)
            failpoint("agents.authorized")
            label = self.label
            if COMMAND_DUTIES[self.command] == Duty.portal:
                label = _portal_label(self._actor.name, label)
            self._bound.enter_context(audit.labelled(label))
            # Audit events are sealed with the database's pepper, read when the first is.
            self._engine = keyed(acting(engine, command=self.command), self._peppers)
        return self._engine

    @property
    def agent(self) -> str:
        """Who is acting, as the system says (the OS user, the database login role)."""
        self.engine()
        assert self._actor is not None
        return self._actor.name

    def check_allowed(self) -> None:
        """Refuse now (exit 1) an agent this command is not for, before it reads its input:
        a file they may not import is not theirs to have checked either."""
        self.engine()

    def check_pepper(self) -> None:
        """Refuse now (exit 5) a pepper that is not the database's, for a command that seals
        its audit event only after writing what cannot be taken back (members streamed to
        stdout): refused at its commit, it would have written them unaudited."""
        self.engine()
        self._peppers()

    def _peppers(self) -> Peppers:
        from cpms_admin.pepper import load_peppers

        return load_peppers(self.settings)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A unit of work; `read_only` for commands that only look, so that on SQLite they
        answer at once while another process writes (see `cpms_admin.db.reader`)."""
        with session_scope(self.engine(), read_only=read_only) as session:
            yield session

    def close(self) -> None:
        self._bound.close()
        if self._engine is not None:
            release(self._engine)
            self._engine = None


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext), "the root callback sets the context"
    names: list[str] = []
    node: Any = ctx  # Typer's Context, then Click's for its parents
    while node.parent is not None:  # the command's words, without the program's name
        names.append(node.info_name or "")
        node = node.parent
    obj.command = " ".join(reversed(names))
    return obj


def _portal_label(agent: str, label: str | None) -> str:
    """The member's flows are recorded as the portal's: the label says who ran them, before
    the agent's own label, which must leave room for it."""
    if label is None:
        return agent
    room = audit.AGENT_MAX_LENGTH - len(f"{agent}: ")
    if len(label) > room:
        raise InvalidInput(
            f"the label (--agent, CPMS_AGENT) has {len(label)} characters; a portal command "
            f"records it after {agent + ':'!r}, which leaves room for {room}"
        )
    return f"{agent}: {label}"
