"""The warm parent of warm_cli.py: imports everything the command may import, then forks
a child per run it is sent. Run by warm_cli.py as `python tests/warm_parent.py FD`, FD its
end of a socket of packets: each packet the run's JSON (arguments, environment, working
directory, umask) and descriptors (the child's stdin, stdout and stderr, and a pipe that
gets the child's pid, then its wait status). It ends when the socket does, once every child
has ended, so that their CPU time counts in the suite's."""

import atexit
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _serve(fd: int) -> None:
    """Import the command, then fork a helper per request until the socket closes."""
    import gc

    _import_everything()
    sock = socket.socket(fileno=fd)
    sock.send(b"ready")
    gc.freeze()  # what the children share stays shared: not written by their collections
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 4)
        if not message:
            break
        _forked(lambda: _helper(sock, json.loads(message), fds))
        for received in fds:
            os.close(received)
        while _reaped(os.WNOHANG):
            pass
    while _reaped(0):  # their CPU time counts in this process's, and so in the suite's
        pass


def _import_everything() -> None:
    """Every module the package imports, at its top or inside a function (WeasyPrint for a
    batch, Alembic for an upgrade): what each child is spared, whichever command it runs."""
    import ast
    import contextlib
    import importlib

    import cpms_admin

    package = Path(cpms_admin.__file__).parent
    for path in package.rglob("*.py"):
        if "migrations" in path.parts or path.name == "__main__.py":
            continue  # run by Alembic, and the command itself
        dotted = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        names = {dotted.removesuffix(".__init__")}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        for name in names:
            with contextlib.suppress(Exception):  # optional (bcrypt), or its library missing
                importlib.import_module(name)
    # What a run's first query would do, the same for every run: the engines' dialects, which
    # SQLAlchemy imports by name, and the ORM's mappers, which it configures on first use.
    for name in ("sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql.psycopg"):
        importlib.import_module(name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()


def _reaped(flags: int) -> bool:
    try:
        return os.waitpid(-1, flags)[0] != 0
    except ChildProcessError:
        return False


def _forked(work: Callable[[], None]) -> int:
    """Fork; the child runs `work` and exits, never coming back to the caller's code (exit
    status 70 if `work` fails). The child's pid, in the parent."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(70)
    return pid


def _helper(sock: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """Fork the command's child, write its pid, wait for it, write its wait status."""
    sock.close()
    *streams, status = fds
    pid = _forked(lambda: _child(request, streams, status))
    for fd in streams:
        os.close(fd)
    os.write(status, f"{pid}\n".encode())
    _, wait_status = os.waitpid(pid, 0)
    os.write(status, f"{wait_status}\n".encode())
    os._exit(0)


def _child(request: dict[str, Any], streams: list[int], status: int) -> None:
    """Become `cpms-admin ARGS` as the installed command would start: its streams, its
    environment, its working directory, its umask (the signals' handlers are the parent's,
    a new interpreter's; the hash seed too is the parent's, the same for every run)."""
    os.close(status)  # the helper's
    for target, fd in enumerate(streams):
        os.dup2(fd, target)
    for fd in set(streams) - {0, 1, 2}:
        os.close(fd)
    os.chdir(request["cwd"])
    if request["umask"] != -1:
        os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()  # the run's TZ, as a new interpreter reads it
    tempfile.tempdir = None  # its TMPDIR: read again, not the one an import settled on
    sys.argv = request["argv"]
    sys.path[0] = os.path.dirname(sys.argv[0])  # the script's directory, as for any script
    _new_streams(unbuffered=bool(request["env"].get("PYTHONUNBUFFERED")))
    code = 0
    try:
        from cpms_admin.cli import main

        main()
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException as crash:
        traceback.print_exc()
        if type(crash) is KeyboardInterrupt:  # as Python ends on one: killed by SIGINT
            _finish(0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        code = 1
    os._exit(_finish(code))


def _new_streams(*, unbuffered: bool) -> None:
    """sys.stdin, stdout and stderr over descriptors 0 to 2, as a new interpreter opens them:
    this parent's encoding and error handlers (warm_cli.py keeps the variables that choose
    them the same), lines split on "\n" alone, stdout and stderr line-buffered on a
    terminal and stderr always, or written through under PYTHONUNBUFFERED."""
    import io

    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        old = getattr(sys, f"__{name}__")
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = f"<{name}>"  # type: ignore[misc]
        through = unbuffered and fd != 0
        binary = raw if through else io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        stream = io.TextIOWrapper(
            binary,  # type: ignore[arg-type]
            encoding=old.encoding,
            errors=old.errors,
            newline="\n",
            line_buffering=not through and (raw.isatty() or fd == 2),
            write_through=through,
        )
        stream.mode = mode  # type: ignore[misc]
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _finish(code: int) -> int:
    """What the interpreter does on its way out: join threads, run atexit, flush stdout and
    stderr (exit status 120 if either fails, as Python's)."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    failed = False
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not stream.closed:
            try:
                stream.flush()
            except (OSError, ValueError):
                failed = True
    return 120 if failed else code


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
