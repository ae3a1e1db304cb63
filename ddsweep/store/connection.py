"""Opening the database: locking, retrying on DuckDB's file lock, migrating."""

from __future__ import annotations

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
        """A read-only connection; waits for a writer to let go, up to `wait` seconds."""
        wait = self.wait if wait is None else wait
        if not self.path.exists():
            raise UserError(f"{self.path}: no such database; create it with `ddsweep plan GRID.yaml --db {self.path}`")
        engine, conn = self._open_for_reading(wait)
        try:
            with conn:
                if _current_revision(conn, self.path) == head_revision():
                    yield conn
                    return
        finally:
            engine.dispose()
        with self.write(wait):  # an older schema: upgrade it, then read
            pass
        engine, conn = self._open(read_only=True, wait=wait)
        try:
            with conn:
                yield conn
        finally:
            engine.dispose()

    def _open_for_reading(self, wait: float) -> tuple[sa.Engine, sa.Connection]:
        """Open read-only, taking a turn at the writers' lock while opening (not while reading).

        Writers queue on the lock file and grab the database the moment it is free, so a
        reader that only polled DuckDB's lock could starve behind a busy coordinator and
        a queue of `plan`s. Holding the lock just while it opens gives the reader its turn;
        the query itself runs after the lock is released, beside other readers.
        """
        if str(self.lock_path) in _WRITING:  # this process holds it already (a read inside a write)
            return self._open(read_only=True, wait=wait)
        turnstile = FileLock(self.lock_path)
        t0 = time.monotonic()
        try:
            turnstile.acquire(timeout=wait)
        except Timeout:
            raise DatabaseBusy(f"{self.path}: {self._lock_holder()} has been writing for over {wait:.0f}s "
                               f"(lock file {self.lock_path}); try again when it is done") from None
        except OSError:  # a read-only directory: no turn to take
            return self._open(read_only=True, wait=wait)
        try:  # briefly: if someone outside ddsweep holds the file, wait for it without blocking writers
            return self._open(read_only=True, wait=min(1.0, max(0.0, wait - (time.monotonic() - t0))))
        except DatabaseBusy:
            pass
        finally:
            turnstile.release()
        return self._open(read_only=True, wait=max(0.0, wait - (time.monotonic() - t0)))

    def _open(self, read_only: bool, wait: float) -> tuple[sa.Engine, sa.Connection]:
        """An engine and its open connection; retries while DuckDB's file lock is held.

        The connection that got in is the one returned: probing and then reconnecting
        would let another process take the file in between (and fail unretried).
        """
        url = f"duckdb:///{self.path}"
        args = {"read_only": True} if read_only else {}
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            engine = sa.create_engine(url, poolclass=NullPool, connect_args=args)
            try:
                return engine, engine.connect()
            except sa.exc.DBAPIError as e:
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


def head_revision() -> str:
    return _script().get_current_head()


def known_revisions() -> set[str]:
    return {s.revision for s in _script().walk_revisions()}


def _current_revision(conn, path) -> str | None:
    tables = {r[0] for r in conn.exec_driver_sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")}
    if "alembic_version" not in tables:
        if tables - {"alembic_version"}:
            raise SchemaError(f"{path}: not a ddsweep database (it has tables {sorted(tables)[:5]} "
                              "but no schema version)")
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchone()
    rev = row[0] if row else None
    if rev is not None and rev not in known_revisions():
        raise SchemaError(f"{path}: schema version {rev} is newer than this ddsweep knows "
                          f"(up to {head_revision()}); upgrade ddsweep to use this database")
    return rev


def _migrate(conn, path) -> None:
    """Bring the schema to head (new or older database); no-op when current."""
    if _current_revision(conn, path) == head_revision():
        return
    from alembic import command

    cfg = _alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    conn.commit()
