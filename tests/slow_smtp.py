"""Slow SMTP servers: real sockets on 127.0.0.1 playing a short script, byte by byte if asked.

Every server stops by itself: it serves one connection, lives at most `LIFETIME` seconds and
gives up as soon as the client has gone, so no test can hang on one.
"""

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

DRIP = 0.5  # seconds between two bytes of a dripping reply
LIFETIME = 15.0  # no slow server outlives this, whatever the client does


@dataclass
class Played:
    """What a slow server saw, for the test to check once the server thread ended."""

    longest_silence: float = 0.0  # between two bytes the server sent while dripping
    client_gone: bool = False  # the client closed or cut the connection
    commands: list[str] = field(default_factory=list)


class Talk:
    """One server-side SMTP conversation, line by line, on a plain or TLS socket."""

    def __init__(self, sock: socket.socket, played: Played) -> None:
        self.sock = sock
        self.played = played
        self.ends = time.monotonic() + LIFETIME
        self._buffer = b""

    def say(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def hear(self) -> str:
        """The next line, without its CRLF; the script ends if the client has gone."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionAbortedError("the client has gone")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("ascii", "replace").rstrip("\r")

    def command(self) -> str:
        """The next command line, noted in `played.commands` by its verb."""
        line = self.hear()
        self.played.commands.append(line.split(" ", 1)[0].upper())
        return line

    def take_message(self) -> None:
        """After `354`: read the message up to its lone dot."""
        while self.hear() != ".":
            pass
        self.played.commands.append(".")

    def drip(self, start: str) -> None:
        """Send `start`, then endless padding, one byte every DRIP seconds, never ending the
        reply: until the client goes away (or LIFETIME, so that the test cannot hang)."""
        data = start.encode()
        sent, last = 0, time.monotonic()
        while time.monotonic() < self.ends:
            byte = data[sent : sent + 1] or b"."
            try:
                self.sock.sendall(byte)
            except OSError:
                self.played.client_gone = True
                return
            now = time.monotonic()
            self.played.longest_silence = max(self.played.longest_silence, now - last)
            sent, last = sent + 1, now
            time.sleep(DRIP)

    def wait_for_goodbye(self) -> None:
        """Say nothing more; drain whatever comes until the client has gone."""
        while time.monotonic() < self.ends:
            if not self.sock.recv(4096):
                self.played.client_gone = True
                return

    def starttls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_side=True)


Script = Callable[[Talk], None]


@contextmanager
def slow_server(
    script: Script, *, implicit_tls: ssl.SSLContext | None = None
) -> Iterator[tuple[int, Played]]:
    """A one-connection server on 127.0.0.1 playing `script`: (port, what it saw)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(LIFETIME)
    port: int = listener.getsockname()[1]
    played = Played()

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # nobody came, or the test is over
        connection.settimeout(LIFETIME)
        talk = Talk(connection, played)
        try:
            if implicit_tls is not None:
                talk.starttls(implicit_tls)
            script(talk)
        except OSError:
            played.client_gone = True  # reset, TLS alert, broken pipe: the client went
        finally:
            talk.sock.close()
            connection.close()

    thread = threading.Thread(target=serve, name="slow-smtp", daemon=True)
    thread.start()
    try:
        yield port, played
    finally:
        listener.close()
        thread.join(LIFETIME + 1)
        assert not thread.is_alive()


def drip_greeting(talk: Talk) -> None:
    talk.drip("220 slow.test ESMTP")
