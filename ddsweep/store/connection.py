"""Opening the database: locking, retrying on DuckDB's file lock, migrating."""

from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from filelock import FileLock, Timeout
from sqlalchemy.pool import NullPool

from ddsweep.errors import DatabaseBusy, SchemaError, StorageError, UserError, storage_fault

DEFAULT_WAIT = 30.0  # seconds a command waits for the database before it gives up
_WRITING: set[str] = set()  # lock files this process holds (Store.write), so a nested read takes no turn
# A read-only connection's working memory: DuckDB's default is 80% of the machine, and a summary
# of 20M rows took 3 GB of it; with this limit DuckDB spills what does not fit (large sorts,
# aggregates, joins) to a folder of the system's temp directory, never beside the database
# (a read writes nothing there). Measured at 20M rows: summary 3 GB -> 0.7 GB, and faster.
READ_MEMORY_LIMIT = "512MB"


def spill_dir() -> str:
    """Where read-only connections spill (DuckDB makes it only when it spills, and removes it)."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"ddsweep-spill-{os.getuid()}")


def _is_lock_error(e: Exception) -> bool:
    return "Could not set lock" in str(e) or "Conflicting lock" in str(e)


def lock_holder(e: Exception) -> str:
    """'PID n (command line)' of the process named in a DuckDB lock error."""
    m = re.search(r"PID (\d+)", str(e))
    if not m:
        return "another process"
    return describe_pid(m.group(1))


def describe_pid(pid) -> str:
    """'PID n (command line)'; the command line where /proc shows it."""
    try:
        cmd = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split())
    except OSError:
        cmd = ""
    return f"PID {pid}" + (f" ({cmd[:120]})" if cmd else "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """A results.duckdb file and the lock that serializes its writers."""

    def __init__(self, path: str | Path, wait: float = DEFAULT_WAIT):
        self.path = Path(path)
        self.wait = wait

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def holder_path(self) -> Path:
        """The PID of the ddsweep process that last took the write lock (for 'who holds it')."""
        return self.path.with_name(self.path.name + ".lock.pid")

    def _lock_holder(self) -> str:
        try:
            pid = int(self.holder_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return "another ddsweep process"
        if pid == os.getpid() or not _pid_alive(pid):  # (the holder has not written its PID yet)
            return "another ddsweep process"
        return f"ddsweep {describe_pid(pid)}"

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def write(self, wait: float | None = None):
        """A read-write connection in a transaction, under the cross-process write lock.

        A storage fault (no permission, read-only file system, full disk), while taking the
        lock, opening or committing, is a StorageError naming the path: one line, exit 2."""
        try:
            with self._write(wait) as conn:
                yield conn
        except Exception as e:  # (DuckDB's own errors, raw or wrapped by SQLAlchemy, and OSError)
            fault = None if isinstance(e, UserError) else storage_fault(e)
            if fault is None:
                raise
            if str(self.path) not in fault:  # (a write's ENOSPC may carry no file name: name the database)
                fault = f"{self.path}: {fault}"
            raise StorageError(f"cannot write {fault}") from None

    @contextmanager
    def _write(self, wait: float | None = None):
        wait = self.wait if wait is None else wait
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.lock_path)
        try:
            lock.acquire(timeout=wait)
        except Timeout:
            raise DatabaseBusy(f"{self.path}: {self._lock_holder()} has been writing for over {wait:.0f}s "
                               f"(lock file {self.lock_path}); try again when it is done") from None
        _WRITING.add(str(self.lock_path))
        try:
            try:
                self.holder_path.write_text(f"{os.getpid()}\n")
            except OSError:
                pass  # only used to name the holder in messages
            engine, conn = self._open(read_only=False, wait=wait)
            try:
                with conn:
                    _migrate(conn, self.path)
                    conn.commit()  # end the version check's implicit transaction
                    with conn.begin():
                        yield conn
            finally:
                engine.dispose()
        finally:
            _WRITING.discard(str(self.lock_path))
            lock.release()

    @contextmanager
    def read(self, wait: float | None = None):
        """A read-only SQLAlchemy connection; waits for a writer to let go, up to `wait` seconds.

        (Analysis reads go through `reader()` and ddsweep.store.results: DuckDB's own client.)
        """
        with self._reading(wait, native=False, upgrade=True) as conn:
            yield conn

    @contextmanager
    def reader(self, wait: float | None = None):
        """A read-only connection of DuckDB's own client (Arrow, `.df()`, `.pl()`), for ddsweep.store.results.

        Same waiting as `read()`; it writes nothing, not even a lock file (see `_take_turn`), and
        so does not upgrade an older schema either: that is one line saying `ddsweep upgrade`.
        """
        with self._reading(wait, native=True, upgrade=False) as conn:
            yield conn

    def revision(self, wait: float | None = None) -> str | None:
        """The schema revision the file holds (None: no ddsweep tables yet), read without upgrading it."""
        self._require()
        engine, conn = self._open_for_reading(self.wait if wait is None else wait, native=True)
        try:
            return _current_revision(_fetcher(conn), self.path)
        finally:
            _close(engine, conn)

    def upgrade(self, wait: float | None = None) -> str | None:
        """Bring an older schema to this ddsweep's (the Alembic migrations, under the write lock);
        returns the revision it had. A current one is left untouched."""
        before = self.revision(wait)
        if before is None:  # (a DuckDB file that is not ddsweep's: not made one here)
            raise SchemaError(older_schema(self.path, None))
        if before != head_revision():
            with self.write(wait):  # (migrates as it opens)
                pass
        return before

    def _require(self) -> None:
        if not self.path.exists():
            raise UserError(f"{self.path}: no such database; create it with `ddsweep plan GRID.yaml --db {self.path}`")

    @contextmanager
    def _reading(self, wait: float | None, native: bool, upgrade: bool):
        wait = self.wait if wait is None else wait
        self._require()
        engine, conn = self._open_for_reading(wait, native)
        try:
            revision = _current_revision(_fetcher(conn), self.path)
            if revision == head_revision():
                yield conn
                return
        finally:
            _close(engine, conn)
        if not upgrade:
            raise SchemaError(older_schema(self.path, revision))
        with self.write(wait):  # an older schema, for a command that writes anyway: upgrade it, then read
            pass
        engine, conn = self._open(read_only=True, wait=wait, native=native)
        try:
            yield conn
        finally:
            _close(engine, conn)

    def _open_for_reading(self, wait: float, native: bool):
        """Open read-only, taking a turn at the writers' lock while opening (not while reading).

        Writers queue on the lock file and grab the database the moment it is free, so a
        reader that only polled DuckDB's lock could starve behind a busy coordinator and
        a queue of `plan`s. Holding the lock just while it opens gives the reader its turn;
        the query itself runs after the lock is released, beside other readers.
        """
        if str(self.lock_path) in _WRITING:  # this process holds it already (a read inside a write)
            return self._open(read_only=True, wait=wait, native=native)
        t0 = time.monotonic()
        turn = _take_turn(self.lock_path, wait)
        if turn is False:
            raise DatabaseBusy(f"{self.path}: {self._lock_holder()} has been writing for over {wait:.0f}s "
                               f"(lock file {self.lock_path}); try again when it is done")
        if turn is None:  # no writer has queued here (or the lock file cannot be read): DuckDB's lock decides
            return self._open(read_only=True, wait=wait, native=native)
        try:  # briefly: if someone outside ddsweep holds the file, wait for it without blocking writers
            return self._open(read_only=True, wait=min(1.0, max(0.0, wait - (time.monotonic() - t0))), native=native)
        except DatabaseBusy:
            pass
        finally:
            os.close(turn)  # (closing the descriptor releases its flock)
        return self._open(read_only=True, wait=max(0.0, wait - (time.monotonic() - t0)), native=native)

    def _open(self, read_only: bool, wait: float, native: bool = False):
        """(engine, open connection): SQLAlchemy's, or (None, DuckDB's own) with native; retries
        while DuckDB's file lock is held.

        The connection that got in is the one returned: probing and then reconnecting
        would let another process take the file in between (and fail unretried).
        """
        import duckdb

        url = f"duckdb:///{self.path}"
        args = {"read_only": True} if read_only else {}
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            engine = None
            try:
                if native:
                    config = {"memory_limit": READ_MEMORY_LIMIT, "temp_directory": spill_dir()} if read_only else {}
                    return None, duckdb.connect(str(self.path), read_only=read_only, config=config)
                engine = sa.create_engine(url, poolclass=NullPool, connect_args=args)
                return engine, engine.connect()
            except (sa.exc.DBAPIError, duckdb.Error) as e:
                if engine is not None:
                    engine.dispose()
                if storage_fault(e):
                    raise StorageError(f"cannot {'read' if read_only else 'write'} {storage_fault(e)}") from None
                if not _is_lock_error(e):
                    raise SchemaError(f"{self.path}: cannot open as a DuckDB database ({_first_line(e)})") from None
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(
                        f"{self.path}: locked by {lock_holder(e)} for over {wait:.0f}s; close that session "
                        "(or wait for it) and try again") from None
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)


def _take_turn(lock_path: Path, wait: float):
    """A reader's turn at the writers' lock: the locked descriptor, None when there is no
    lock file to queue on, False when writers kept it for `wait` seconds.

    Unlike FileLock it never creates the lock file: a read-only command leaves the
    directory as it found it. A writer creates the file before it opens the database,
    so no lock file means no ddsweep writer is queued; DuckDB's own lock still decides.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock FileLock takes (flock)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)
        except OSError:  # no flock on this file system: no turn to take
            os.close(fd)
            return None


def _close(engine, conn) -> None:
    conn.close()
    if engine is not None:
        engine.dispose()


def _fetcher(conn):
    """sql -> rows, for a SQLAlchemy connection or DuckDB's own."""
    if hasattr(conn, "exec_driver_sql"):
        return lambda sql: conn.exec_driver_sql(sql).fetchall()
    return lambda sql: conn.execute(sql).fetchall()


def _first_line(e: Exception) -> str:
    return str(getattr(e, "orig", e)).strip().splitlines()[0]


# ----------------------------------------------------------------------------- migrations


def migrations_dir() -> Path:
    """The Alembic scripts shipped in the package (ddsweep/store/migrations/)."""
    return Path(str(resources.files("ddsweep.store.migrations")))


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


@lru_cache(maxsize=1)
def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


@lru_cache(maxsize=1)
def _revisions() -> dict[str, str | None]:
    """{revision: down_revision} of the shipped scripts, read from their text.

    Every command checks the schema version before it reads; loading Alembic's script
    directory for that (importing Alembic and every script) took most of a second, more
    than a `ddsweep status` itself. `tests/test_results.py` checks this against Alembic.
    """
    out = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        rev = re.search(r'^revision\s*=\s*["\']([^"\']+)["\']', text, re.M)
        down = re.search(r'^down_revision\s*=\s*(?:["\']([^"\']+)["\']|None)', text, re.M)
        if rev and down:
            out[rev.group(1)] = down.group(1)
    return out


def head_revision() -> str:
    revs = _revisions()
    heads = set(revs) - set(revs.values())
    if len(heads) != 1:  # (branched scripts: ask Alembic)
        return _script().get_current_head()
    return heads.pop()


def known_revisions() -> set[str]:
    return set(_revisions())


def _current_revision(fetch, path) -> str | None:
    """The schema revision, read through `fetch` (sql -> rows; see _fetcher)."""
    tables = {r[0] for r in fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")}
    if "alembic_version" not in tables:
        if tables - {"alembic_version"}:
            raise SchemaError(f"{path}: not a ddsweep database (it has tables {sorted(tables)[:5]} "
                              "but no schema version)")
        return None
    rows = fetch("SELECT version_num FROM alembic_version")
    rev = rows[0][0] if rows else None
    if rev is not None and rev not in known_revisions():
        raise SchemaError(f"{path}: schema version {rev} is newer than this ddsweep knows "
                          f"(up to {head_revision()}); upgrade ddsweep to use this database")
    return rev


def older_schema(path, revision: str | None) -> str:
    """The one line a read-only command gives for a database it would have to upgrade (a write) to read."""
    if revision is None:
        return f"{path}: no ddsweep tables yet; plan a grid into it: ddsweep plan GRID.yaml --db {path}"
    return (f"{path}: its schema ({revision}) is older than this ddsweep's ({head_revision()}); upgrade it "
            f"first: ddsweep upgrade --db {path} (the commands that write, plan, work and refine, upgrade it "
            "themselves)")


def _migrate(conn, path) -> None:
    """Bring the schema to head (new or older database); no-op when current."""
    if _current_revision(_fetcher(conn), path) == head_revision():
        return
    from alembic import command

    cfg = _alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    conn.commit()
