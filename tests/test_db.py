"""Opening, creating and upgrading the database."""

from __future__ import annotations

import base64
import hmac
import sqlite3

import pytest
import requests
from click.testing import CliRunner
from conftest import MEMBER_HEADER
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from engine.cli import main
from engine.errors import CampaignError
from engine.members.importer import count_members, import_members
from engine.store.db import (
    check_schema,
    current_revision,
    database_error_message,
    head_revision,
    init_db,
    open_engine,
)


def test_uninitialised_database_gets_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path}/new.db", "members", "list"])
    assert result.exit_code == 2
    assert "new.db does not exist: run `campaign init` first" in result.stderr
    assert not (tmp_path / "new.db").exists()


def test_init_creates_then_reports_up_to_date_and_keeps_data(tmp_path, write_csv):
    url = f"sqlite:///{tmp_path}/c.db"
    runner = CliRunner()
    first = runner.invoke(main, ["--db", url, "init"])
    assert first.stdout.startswith("Created database")
    engine = open_engine(url)
    import_members(
        engine, write_csv("m.csv", MEMBER_HEADER + "\nM1,A,B,a@members.example.org,BR8 7RE,1,,,,,\n")
    )
    second = runner.invoke(main, ["--db", url, "init"])
    assert "is up to date" in second.stdout
    assert count_members(engine) == 1
    engine.dispose()


def test_database_from_campaign_db_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMPAIGN_DB", f"sqlite:///{tmp_path}/env.db")
    assert CliRunner().invoke(main, ["init"]).exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path}/c.db")
    init_db(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    # WAL mode is stored in the file: any other reader sees it too.
    assert sqlite3.connect(tmp_path / "c.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_behind_head_asks_for_init(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(CampaignError, match="run `campaign init` to upgrade"):
        check_schema(engine)


def test_migrated_schema_is_at_head(engine):
    assert current_revision(engine) == head_revision()


def test_bad_database_url_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["--db", "nonsense", "init"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "Error: CAMPAIGN_DB: 'nonsense' is not a database URL (try sqlite:///campaign.db or postgresql://user@host/dbname)"
    )


def test_unreachable_postgres_is_one_line():
    result = CliRunner().invoke(main, ["--db", "postgresql://nobody@127.0.0.1:1/none", "init"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: database: cannot open")
    assert len(result.stderr.strip().splitlines()) == 1


def test_upgrade_from_the_first_schema_keeps_members(tmp_path, write_csv):
    from alembic import command

    from engine.store.db import _alembic_config

    engine = open_engine(f"sqlite:///{tmp_path}/old.db")
    command.upgrade(_alembic_config(engine), "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO member (membership_no, first_name, last_name, email, postcode, school_urn, custom, "
            "row_hash, created_at, updated_at, mp_status, employer_status) VALUES ('M1', 'Ann', 'Lee', "
            "'a@members.example.org', 'LS1 1AA', '1', '{}', 'x', '2026-01-01', '2026-01-01', 'pending', 'pending')"
        )
    before, after = init_db(engine)
    assert (before, after) == ("0001", head_revision())
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT first_name, mail_opt_out_at FROM member").one() == ("Ann", None)
    engine.dispose()


def test_migrations_build_exactly_the_models(engine):
    """Every model change has its migration: nothing differs after `campaign init`."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_upgrading_gives_letters_nonces_and_revokes_their_links_made_from_references(engine, tmp_path):
    from alembic import command
    from sqlalchemy import text
    from test_waves import MP_WAVE, SETTINGS, load_sample
    from test_web import Site

    from engine.letters.launch import launch_wave
    from engine.letters.link_secret import check_links_made_with, reissue_links
    from engine.letters.links import link_token, token_hash
    from engine.letters.waves import create_wave
    from engine.store.db import _alembic_config

    load_sample(engine, tmp_path)
    create_wave(engine, "MPs", MP_WAVE, SETTINGS)
    launch_wave(engine, "MPs", SETTINGS)
    command.downgrade(_alembic_config(engine), "0006")

    def from_reference(reference: str) -> str:
        digest = hmac.digest(SETTINGS.secret.encode(), f"letter:{reference}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest).decode()[:22]

    # The letters as schema 0006 made them: each link an HMAC of the letter's reference.
    columns = "id, reference, state, subject, body_text, target_name, token_expires_at"
    with engine.begin() as conn:
        for letter_id, reference in conn.execute(text("SELECT id, reference FROM letter")).all():
            conn.execute(
                text("UPDATE letter SET token_hash = :hash WHERE id = :id"),
                {"hash": token_hash(from_reference(reference)), "id": letter_id},
            )
        before = conn.execute(text(f"SELECT {columns} FROM letter ORDER BY id")).all()
        outbox = conn.execute(text("SELECT id, letter_id, message_id FROM outbox ORDER BY id")).all()
    assert init_db(engine) == ("0006", head_revision())
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT {columns} FROM letter ORDER BY id")).all() == before
        assert conn.execute(text("SELECT id, letter_id, message_id FROM outbox ORDER BY id")).all() == outbox
        nonces = dict(conn.execute(text("SELECT reference, link_nonce FROM letter")).all())
    assert len(before) == 40 and len(set(nonces.values())) == 40
    assert all(len(nonce) == 22 for nonce in nonces.values())
    reference = before[0].reference
    with Site(engine) as site:
        assert requests.get(f"{site.base}/l/{from_reference(reference)}", timeout=10).status_code == 404
        # Until every letter is given its new link, commands that make links refuse to run.
        with pytest.raises(CampaignError, match="run `campaign links reissue`"):
            check_links_made_with(engine, SETTINGS)
        assert reissue_links(engine, SETTINGS) == 40
        check_links_made_with(engine, SETTINGS)
        new = link_token(SETTINGS.secret, nonces[reference])
        assert requests.get(f"{site.base}/l/{new}", timeout=10).status_code == 200
        assert requests.get(f"{site.base}/l/{from_reference(reference)}", timeout=10).status_code == 404


def test_a_database_error_reaching_the_cli_is_one_line_without_sql_or_values(cli, engine):
    # A damaged database: a table gone while the schema version says it is there.
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TABLE member" + (" CASCADE" if engine.dialect.name == "postgresql" else "")
        )
    result = cli("members", "show", "M100001")
    expected = {
        "sqlite": "database: OperationalError: no such table: member",
        "postgresql": 'database: UndefinedTable (SQLSTATE 42P01): relation "member" does not exist',
    }[engine.dialect.name]
    assert (result.exit_code, result.stderr) == (1, f"Error: {expected}\n")
    assert result.stdout == ""


# Only PostgreSQL's data exceptions quote the offending value: SQLite's never do.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_postgresql_data_error_names_its_kind_but_not_the_value(engine):
    assert engine.dialect.name == "postgresql"
    with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT CAST(:postcode AS INTEGER)"), {"postcode": "BR8 7RE"})
    assert "BR8 7RE" in str(caught.value)  # SQLAlchemy's own message would print it
    assert database_error_message(caught.value) == "database: InvalidTextRepresentation (SQLSTATE 22P02)"
