"""Opening the database, and creating or upgrading its schema with Alembic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite as sqlite_dialect_class
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, StatementError

from engine.errors import CampaignError

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain postgresql:// URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_engine(url: str) -> Engine:
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise CampaignError(f"CAMPAIGN_DB: {url!r} is not a database URL") from None
    # Compact JSON: frozen merges are stored for every letter.
    kwargs: dict[str, Any] = {"json_serializer": _compact_json}
    # How long SQLite waits on another writer's lock; a URL's ?timeout=SECONDS chooses another.
    if parsed.get_backend_name() == "sqlite" and "timeout" not in parsed.query:
        kwargs["connect_args"] = {"timeout": 30}
    try:
        engine = create_engine(parsed, **kwargs)
    except Exception as exc:  # a missing driver or unknown dialect
        raise CampaignError(f"CAMPAIGN_DB: cannot use {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# One encoder for every value: json.dumps with options builds a new one per call, which cost
# more than encoding a letter's frozen merge.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _compact_json(value: Any) -> str:
    return _COMPACT_JSON.encode(value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Letters are 2-4 KB rows: with 4 KB pages each takes a page of its own.
    # 8 KB pages hold three, which halves the file and the writes. Only takes
    # effect when the file is new.
    cursor.execute("PRAGMA page_size=8192")
    # WAL lets the web pages read while a command writes; NORMAL is durable under WAL
    # except for the last transactions on power loss, which re-running recovers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        reason = " ".join(str(exc.orig).split())
        where = engine.url.render_as_string(hide_password=True)
        raise CampaignError(f"database: cannot open {where}: {reason}") from None


def init_db(engine: Engine) -> tuple[str | None, str]:
    """Create the schema, or upgrade it to this version; returns (before, after)."""
    before = current_revision(engine)
    command.upgrade(_alembic_config(engine), "head")
    return before, head_revision()


def check_schema(engine: Engine) -> None:
    """Refuse to work on a database that `campaign init` has not prepared."""
    current = current_revision(engine)
    if current is None:
        raise CampaignError(
            f"database {engine.url.render_as_string(hide_password=True)} is not initialised: "
            "run `campaign init` first"
        )
    if current != head_revision():
        raise CampaignError(
            f"database schema is at {current}, this version needs {head_revision()}: "
            "run `campaign init` to upgrade (no data is lost)"
        )


def database_error_message(exc: StatementError) -> str:
    """A database error as one line naming what went wrong, never the statement or its values.

    SQLAlchemy's own message carries both, and the values are members' personal data.
    """
    orig = exc.orig if exc.orig is not None else exc
    name = type(orig).__name__
    if not isinstance(exc, DBAPIError):
        # A value the driver could not take (a bind processor's error quotes it): name the kind only.
        return f"database: {name} while preparing a statement's values"
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    if sqlstate is not None and diag is not None:
        # PostgreSQL's primary message names tables and constraints, except for data exceptions
        # (class 22), which quote the offending value; the rest of its text repeats the SQL.
        if sqlstate.startswith("22") or not diag.message_primary:
            return f"database: {name} (SQLSTATE {sqlstate})"
        return f"database: {name} (SQLSTATE {sqlstate}): {diag.message_primary}"
    # SQLite's messages, and psycopg's own (a NUL, a lost connection), never include bound values.
    lines = str(orig).strip().splitlines()
    return f"database: {name}: {lines[0]}" if lines else f"database: {name}"


def database_outage_message(exc: OperationalError) -> str | None:
    """One line for a database that went away or stayed locked mid-command, or None for any
    other error. Neither is the command's fault nor corrupts anything: each transaction is whole
    or absent, so running the command again continues from what was committed."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or ""
    first = (str(orig).strip().splitlines() or [""])[0]
    if exc.connection_invalidated or sqlstate.startswith(("08", "57P")):
        # PostgreSQL restarted, the server was cut off, or an administrator ended the session.
        return f"database: the connection was lost ({first}); re-run to continue"
    if "database is locked" in first:
        # SQLite waited its timeout for another program's write lock (a backup, a second command).
        return "database: locked by another program for too long (database is locked); re-run to continue"
    return None


def replace_rows(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows, replacing any with the same key (INSERT … ON CONFLICT DO UPDATE)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite_insert(table) if dialect == "sqlite" else pg_insert(table)
        columns = [name for name in rows[0] if name != key]
        stmt = insert.on_conflict_do_update(
            index_elements=[table.c[key]],
            set_={name: insert.excluded[name] for name in columns},
        )
        conn.execute(stmt, rows)
        return
    column = table.c[key]
    keys = [row[key] for row in rows]
    for start in range(0, len(keys), 500):
        conn.execute(table.delete().where(column.in_(keys[start : start + 500])))
    conn.execute(table.insert(), rows)


@dataclass
class PreparedInsert:
    """An INSERT and its rows as driver parameters, ready for executemany."""

    sql: str
    params: list[tuple[Any, ...]]


def sqlite_dialect() -> Dialect:
    """The dialect open_engine uses for SQLite, for preparing rows away from a connection."""
    return sqlite_dialect_class(json_serializer=_compact_json)


def prepare_insert(table: Table, rows: list[dict[str, Any]], dialect: Dialect) -> PreparedInsert:
    """The same statement Core would run, compiled once, with each column's bind processor applied.

    SQLAlchemy's generic per-parameter work otherwise costs more than SQLite's
    own insert. Pure computation: a launch does it in its worker process.
    """
    columns = list(rows[0])
    compiled = table.insert().compile(dialect=dialect, column_keys=columns)
    processors = {name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns}
    order = [compiled.binds[key].key for key in compiled.positiontup or ()]
    active = [(order.index(name), p) for name, p in processors.items() if p is not None]
    # A launch stamps thousands of rows with the same few datetimes: convert each once.
    memo: dict[tuple[int, Any], Any] = {}
    params: list[tuple[Any, ...]] = []
    for row in rows:
        values = [row[key] for key in order]
        for position, process in active:
            value = values[position]
            if isinstance(value, datetime):
                key = (position, value)
                if key not in memo:
                    memo[key] = process(value)
                values[position] = memo[key]
            else:
                values[position] = process(value)
        params.append(tuple(values))
    return PreparedInsert(str(compiled), params)


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]] | PreparedInsert) -> None:
    """executemany INSERT of many same-shaped rows, for the hot paths."""
    if isinstance(rows, PreparedInsert):
        if rows.params:
            conn.exec_driver_sql(rows.sql, rows.params)
        return
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        # psycopg adapts JSON and datetimes itself, and batches executemany in a pipeline.
        conn.execute(table.insert(), rows)
        return
    insert_rows(conn, table, prepare_insert(table, rows, conn.dialect))


def reserve_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """`count` new ids from a PostgreSQL table's id sequence, in order, for rows about to be stored.

    Rows given their ids up front can be named by other rows (an invitation by its letter)
    without reading them back.
    """
    ids = conn.exec_driver_sql(
        "SELECT nextval(pg_get_serial_sequence(%(table)s, 'id')) FROM generate_series(1, %(count)s)",
        {"table": table.name, "count": count},
    ).scalars()
    return sorted(ids)


@contextmanager
def sqlite_cache(conn: Connection, mebibytes: int) -> Iterator[None]:
    """Give this SQLite connection a page cache of `mebibytes` while the block runs.

    Enter before the connection's transaction begins and leave after it ends. SQLite's default
    2 MB cannot hold the indexes of a large launch's random keys (references, link tokens,
    Message-IDs): pages it had to put out to the log were written there again and again,
    2.2 GB of writes for 100,000 letters (0.65 GB with 64 MB), and the time per letter grew
    with the wave. Only pages in use take memory.
    """
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    before = dbapi_connection.execute("PRAGMA cache_size").fetchone()[0]
    dbapi_connection.execute(f"PRAGMA cache_size = -{mebibytes * 1024}")
    try:
        yield
    finally:
        if not conn.invalidated:
            dbapi_connection.execute(f"PRAGMA cache_size = {before}")


def compress_fast(conn: Connection) -> None:
    """For the rest of this PostgreSQL transaction, compress long text with lz4 where the server can.

    A letter's row is just over the 2 KB at which PostgreSQL compresses it, and its default
    (pglz) costs a launch about as much as writing the row; lz4 is several times cheaper, and
    reads back the same text.
    """
    supported = conn.exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    if supported:
        conn.exec_driver_sql("SET LOCAL default_toast_compression = lz4")


def copy_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Store many same-shaped rows in a PostgreSQL table with COPY, in the caller's transaction.

    An executemany INSERT, even pipelined, is one statement per row for the server to plan and
    run; COPY is one stream, several times faster for a launch's thousands of letters. The rows
    stored are the same: columns left out take their defaults, JSON is serialised as open_engine's
    engines do, and a database error is raised as SQLAlchemy's, as Core's INSERT would raise it.
    """
    if not rows:
        return
    columns = list(rows[0])
    # Defaults SQLAlchemy fills in on the client for columns an INSERT leaves out.
    defaults = [
        column
        for column in table.c
        if column.name not in rows[0] and column.default is not None and not column.default.is_sequence
    ]
    json_columns = {name for name in columns if isinstance(table.c[name].type, JSON)}

    def values(row: dict[str, Any]) -> list[Any]:
        found = [
            _compact_json(row[name]) if name in json_columns and row[name] is not None else row[name]
            for name in columns
        ]
        for column in defaults:
            default = column.default
            found.append(default.arg(None) if default.is_callable else default.arg)  # type: ignore[union-attr]
        return found

    copy_values(conn, table, columns + [column.name for column in defaults], map(values, rows))


def copy_values(conn: Connection, table: Table, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY rows of values (in the order of `names`, ready for the driver) into a PostgreSQL
    table, in the caller's transaction. A database error is raised as SQLAlchemy's, with the
    values (members' data) left out of its message, so that a lost connection reads "re-run to
    continue" as it does for Core's statements."""
    from psycopg import Error as PsycopgError
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    dbapi_connection = conn.connection.dbapi_connection
    cursor = dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except PsycopgError as exc:
        raise driver_error(conn, cursor, statement.as_string(dbapi_connection), exc) from exc
    finally:
        cursor.close()


def driver_error(conn: Connection, cursor: Any, sql: str, exc: Exception) -> DBAPIError:
    """A driver's error on a statement run past SQLAlchemy, as SQLAlchemy would raise it: its own
    class (IntegrityError, OperationalError…), the parameters (members' data) left out of its
    text, and a lost connection marked as one, which callers turn into "re-run to continue"."""
    dbapi_connection = conn.connection.dbapi_connection
    invalidated = conn.dialect.is_disconnect(exc, dbapi_connection, cursor)
    return DBAPIError.instance(
        sql,
        None,
        exc,
        conn.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        connection_invalidated=invalidated,
        dialect=conn.dialect,
    )


class FastStatement:
    """A Core statement compiled once for a dialect and run through the driver directly.

    For the sending worker's few per-message writes, where SQLAlchemy's own
    per-execution work costs as much as the database. Bound values go through
    each parameter's own type processor, exactly as Core would send them.
    """

    def __init__(self, statement: Any, dialect: Dialect):
        self.compiled = statement.compile(dialect=dialect)
        self.sql = str(self.compiled)
        self.order = list(self.compiled.positiontup or ())
        self.processors = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for bind, name in self.compiled.bind_names.items()
        }

    def execute(self, conn: Connection, **values: Any) -> int:
        cursor = self.cursor(conn, **values)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def cursor(self, conn: Connection, **values: Any) -> Any:
        """Run the statement and return the driver's cursor, still open: in a psycopg pipeline
        its rowcount is known only once the pipeline has synced."""
        params = self.compiled.construct_params(values)
        for name, process in self.processors.items():
            if process is not None and name in params:
                params[name] = process(params[name])
        driver_params: Any = tuple(params[key] for key in self.order) if self.order else params
        # Straight on the driver's cursor, inside the caller's transaction: even
        # exec_driver_sql sets up an execution context that costs more than the write.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, driver_params)
        except BaseException:
            cursor.close()
            raise
        return cursor


class FastQuery:
    """A Core statement compiled once for a dialect and run through the driver directly: a
    select's rows as the dicts Core's rows would give (each column's own result processor
    applied), or an update's count of rows.

    For the statements ingest runs for every message, where SQLAlchemy's per-execution work
    (above all laying out an IN list's values again each time) costs several times the
    database's. A list value of an IN is laid out once per length and remembered.
    """

    def __init__(self, statement: Any, dialect: Dialect):
        self.compiled = statement.compile(dialect=dialect)
        self.bind_processors = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for bind, name in self.compiled.bind_names.items()
        }
        columns = statement.selected_columns if statement.is_select else []
        self.keys = [column.key for column in columns]
        self.result_processors = [
            (i, process)
            for i, column in enumerate(columns)
            if (process := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]
        # Per set of list lengths: the SQL, and where each driver parameter's value comes from.
        self.layouts: dict[tuple[tuple[str, int], ...], tuple[str, list[tuple[str, str, int, Any]]]] = {}

    def _layout(self, values: dict[str, Any]) -> tuple[str, list[tuple[str, str, int, Any]]]:
        lengths = tuple(sorted((k, len(v)) for k, v in values.items() if isinstance(v, list)))
        layout = self.layouts.get(lengths)
        if layout is None:
            state = self.compiled.construct_expanded_state(self.compiled.construct_params(values))
            # (driver's name, name in `values` or "" for a constant, index in a list or -1, constant)
            sources: list[tuple[str, str, int, Any]] = []
            for name in state.positiontup or list(state.parameters):
                base, _, index = name.rpartition("_")
                if name in values:
                    sources.append((name, name, -1, None))
                elif isinstance(values.get(base), list):
                    sources.append((name, base, int(index) - 1, None))
                else:  # a constant of the statement, such as a fixed IN list's values
                    process = self.bind_processors.get(base) or self.bind_processors.get(name)
                    value = state.parameters[name]
                    sources.append((name, "", -1, process(value) if process else value))
            layout = self.layouts[lengths] = (state.statement, sources)
        return layout

    def rows(self, conn: Connection, **values: Any) -> list[dict[str, Any]]:
        fetched = self._run(conn, values, fetch=True)
        keys, processors = self.keys, self.result_processors
        found = []
        for raw in fetched:
            row = list(raw)
            for i, process in processors:
                row[i] = process(row[i])
            found.append(dict(zip(keys, row, strict=True)))
        return found

    def first(self, conn: Connection, **values: Any) -> dict[str, Any] | None:
        found = self.rows(conn, **values)
        return found[0] if found else None

    def execute(self, conn: Connection, **values: Any) -> int:
        """Run a write: how many rows it changed."""
        return self._run(conn, values, fetch=False)

    def _run(self, conn: Connection, values: dict[str, Any], fetch: bool) -> Any:
        sql, sources = self._layout(values)
        params = []
        for _, name, index, constant in sources:
            if not name:
                params.append(constant)
                continue
            value = values[name] if index < 0 else values[name][index]
            process = self.bind_processors.get(name)
            params.append(process(value) if process is not None else value)
        driver_params: Any = (
            tuple(params)
            if self.compiled.positional
            else {driver_name: value for (driver_name, *_), value in zip(sources, params, strict=True)}
        )
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, driver_params)
            return cursor.fetchall() if fetch else cursor.rowcount
        except conn.dialect.loaded_dbapi.Error as exc:
            raise driver_error(conn, cursor, sql, exc) from exc
        finally:
            cursor.close()


class FastInsert:
    """One row into `table` through the driver directly, its new id returned: the insert Core
    would run for the row's columns (compiled once per set of columns), each value through its
    column's bind processor. A failure is raised as Core raises it (IntegrityError...).
    Columns the row leaves out get no Python-side default: give every column that has one."""

    def __init__(self, table: Table, dialect: Dialect):
        self.table, self.dialect = table, dialect
        self.returning = dialect.name != "sqlite"  # SQLite tells the new row's id itself
        self.shapes: dict[tuple[str, ...], tuple[str, list[str], list[Any]]] = {}

    def _shape(self, columns: tuple[str, ...]) -> tuple[str, list[str], list[Any]]:
        shape = self.shapes.get(columns)
        if shape is None:
            statement = self.table.insert()
            if self.returning:
                statement = statement.returning(*self.table.primary_key.columns)
            compiled = statement.compile(dialect=self.dialect, column_keys=list(columns))
            order = [compiled.binds[key].key for key in compiled.positiontup or compiled.binds]
            processors = [
                self.table.c[name].type.dialect_impl(self.dialect).bind_processor(self.dialect)
                for name in order
            ]
            shape = self.shapes[columns] = (str(compiled), order, processors)
        return shape

    def insert(self, conn: Connection, row: dict[str, Any]) -> Any:
        sql, order, processors = self._shape(tuple(row))
        values = [
            row[name] if process is None else process(row[name])
            for name, process in zip(order, processors, strict=True)
        ]
        params: Any = tuple(values) if self.dialect.positional else dict(zip(order, values, strict=True))
        dbapi = self.dialect.loaded_dbapi
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            return cursor.fetchone()[0] if self.returning else cursor.lastrowid
        except dbapi.Error as exc:
            raise driver_error(conn, cursor, sql, exc) from exc
        finally:
            cursor.close()


def without_nul(row: dict[str, Any]) -> dict[str, Any]:
    """A row's text without NUL characters, which PostgreSQL refuses in text (raw bytes keep them)."""
    return {k: v.replace("\0", "") if isinstance(v, str) else v for k, v in row.items()}
