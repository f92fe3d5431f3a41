"""Fixtures: a fresh database per test on SQLite and, where a server runs, on PostgreSQL.

CI sets CAMPAIGN_REQUIRE_SERVERS=1, which turns "PostgreSQL not available"
and "../shared not found" skips into failures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.store.db import init_db, open_engine

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
REQUIRE_SERVERS = os.environ.get("CAMPAIGN_REQUIRE_SERVERS") == "1"
PG_URL = os.environ.get("CAMPAIGN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SHARED = Path(os.environ.get("CAMPAIGN_SHARED", ROOT.parent / "shared"))
# The link secret every test that builds links uses, set explicitly: the engine has no default.
TEST_SECRET = "tests-only-link-secret-7Qm2Kx9PvR4tW8yZ"


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires every server and file to be there."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (CAMPAIGN_REQUIRE_SERVERS=1)")
    pytest.skip(reason)


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        unavailable(f"{path} not found: the shared corpora live beside the checkout")
    return path


_pg_checked: dict[str, str | None] = {}


def _pg_problem() -> str | None:
    if "result" not in _pg_checked:
        try:
            psycopg.connect(PG_URL, connect_timeout=3).close()
            _pg_checked["result"] = None
        except psycopg.Error as exc:
            _pg_checked["result"] = f"PostgreSQL at {PG_URL} not available: {exc}".splitlines()[0]
    return _pg_checked["result"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL; PostgreSQL tests each get their own schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/campaign.db"
        engine = open_engine(url)
        init_db(engine)
        engine.dispose()
        yield url
        return
    problem = _pg_problem()
    if problem:
        unavailable(problem)
    schema = f"ce_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    engine = open_engine(url)
    init_db(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def engine(db_url: str):
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


class Cli:
    """Runs `campaign --db URL …` in-process, as a user would type it, with the tests' link secret
    in CAMPAIGN_SECRET unless `env` says otherwise (None unsets a variable)."""

    def __init__(self, db_url: str):
        self.db_url = db_url
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        env = {"CAMPAIGN_SECRET": TEST_SECRET, "CAMPAIGN_SECRET_FILE": None, **(env or {})}
        return self.runner.invoke(main, ["--db", self.db_url, *args], env=env, catch_exceptions=False)


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)


MEMBER_HEADER = (
    "membership_no,first_name,last_name,email,postcode,school_urn,address_line1,town,role,branch,region"
)


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write text to a CSV file in tmp_path and return its path."""

    def write(name: str, text: str, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return path

    return write


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test, so fixtures can tell a failed test (for screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
