"""Reading and checking an import file in a helper process, while the caller writes.

Validation is pure Python and costs more per row than the database insert; run in a second
process, it overlaps the writes instead of adding to them (bench/import.py). Batches come
back in file order through a pipe whose small buffer keeps the helper at most a batch or
two ahead, so memory stays flat. If the caller dies (even by SIGKILL), the helper's next
send fails on the closed pipe and it exits.
"""

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import partial
from itertools import islice
from multiprocessing.connection import Connection
from typing import TypeVar

from cpms_admin.bulk.formats import MemberFile, RowError
from cpms_admin.bulk.import_rows import Checked, CheckedRow, PendingRow, RowChecker
from cpms_admin.errors import CpmsError, Refused

T = TypeVar("T")
# A valid row crosses the pipe as a plain tuple: pickling it is 3 to 5 times cheaper than a
# dataclass, and this is the hottest path of an import.
_Packed = tuple[int, tuple[object, ...], str | None, tuple[str, ...], bool]
_make = CheckedRow._make


def _pack(result: Checked) -> _Packed | PendingRow | RowError:
    if isinstance(result, CheckedRow):
        return tuple(result)  # type: ignore[return-value]  # a plain tuple pickles smaller
    return result


def _unpack(item: _Packed | PendingRow | RowError) -> Checked:
    if isinstance(item, PendingRow | RowError):
        return item
    return _make(item)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _work(
    member_file: MemberFile,
    batch_size: int,
    make_checker: Callable[[], RowChecker],
    reader: Connection,
    writer: Connection,
) -> None:
    reader.close()  # only the caller reads: with it gone, a send fails instead of blocking
    try:
        try:
            checker = make_checker()  # here: its temporary database is the helper's
            for batch in batches(member_file, batch_size):
                writer.send(("batch", [_pack(result) for result in checker.check_batch(batch)]))
            for held in checker.held(batch_size):
                writer.send(("batch", held))
            writer.send(("done", None))
            checker.close()
        except CpmsError as exc:  # the file turned out unreadable
            writer.send(("error", exc))
        except Exception as exc:  # a bug: tell the caller rather than leave it waiting
            writer.send(("error", Refused(f"the import checker failed ({type(exc).__name__})")))
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # the caller is gone or interrupted: nothing left to do
    finally:
        writer.close()


class CheckedBatches:
    """The file's rows checked by RowChecker in a helper process, in batches, in file order.

    with CheckedBatches(member_file, batch_size=2000, now=clock()) as checked:
        for batch in checked: ...
    """

    def __init__(
        self, member_file: MemberFile, *, batch_size: int, now: datetime, hold: bool = True
    ) -> None:
        methods = multiprocessing.get_all_start_methods()
        # fork starts in milliseconds; the helper only reads the file, it never touches the
        # caller's database connections or threads.
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        self._reader, writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_work,
            args=(
                member_file,
                batch_size,
                partial(RowChecker, now=now, hold=hold),
                self._reader,
                writer,
            ),
            daemon=True,
            name="cpms-import-checker",
        )
        self._process.start()
        writer.close()

    def __iter__(self) -> Iterator[list[Checked]]:
        while True:
            try:
                kind, payload = self._reader.recv()
            except EOFError:
                raise Refused("the import checker process stopped unexpectedly") from None
            if kind == "done":
                return
            if kind == "error":
                raise payload
            yield [_unpack(item) for item in payload]

    def close(self) -> None:
        self._reader.close()  # a helper still sending gets a broken pipe and exits
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def __enter__(self) -> "CheckedBatches":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
