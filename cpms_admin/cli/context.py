"""What every command gets: settings, the acting agent, output mode, clock and a lazy engine."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import typer
from sqlalchemy import Engine
from sqlmodel import Session

from cpms_admin.audit_chain.seal import keyed
from cpms_admin.clock import Clock, system_clock
from cpms_admin.credentials.pepper import Peppers
from cpms_admin.db import check_schema, make_engine, session_scope
from cpms_admin.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    agent: str
    json_output: bool = False
    clock: Clock = system_clock
    _engine: Engine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        """The engine, created on first use and checked to be at the latest schema."""
        if self._engine is None:
            engine = make_engine(self.settings.database_url)
            check_schema(engine)
            # Audit events are sealed with the database's pepper, read when the first is.
            self._engine = keyed(engine, self._peppers)
        return self._engine

    def _peppers(self) -> Peppers:
        from cpms_admin.credentials.pepper import load_peppers

        return load_peppers(self.settings)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A unit of work; `read_only` for commands that only look, so that on SQLite they
        answer at once while another process writes (see `cpms_admin.db.reader`)."""
        with session_scope(self.engine(), read_only=read_only) as session:
            yield session

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext), "the root callback sets the context"
    return obj
