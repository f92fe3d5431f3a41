"""All the real bounces, complaints and auto-replies in ../shared through ingest, into the database."""

from __future__ import annotations

from collections import Counter

from conftest import ROOT, shared_path
from sqlalchemy import func, select
from test_classify import expected_kind

from engine.inbox.ingest import Ingester, IngestResult
from engine.inbox.sources import EmlSource
from engine.settings import Settings
from engine.store.models import failure_table, inbound_table, suppression_table

SETTINGS = Settings.from_env({}, templates_dir=str(ROOT / "templates"))
# Filed as bounces by the corpus but not failures: two Amazon SES "Delivery" notices
# (success) and an SES "Complaint". Filed as ordinary but a bounce: rb-issue-368-bug
# ("rejected ... Mailbox full"). See test_classify.py.
NOT_AS_FILED = {
    "lhost-amazonses-11.eml": "complaint",
    "lhost-amazonses-12.eml": "unrelated",
    "lhost-amazonses-13.eml": "unrelated",
    "rb-issue-368-bug.eml": "bounce",
}
KIND = {"bounce": "bounce", "complaint": "complaint", "auto_reply": "auto_reply", "ordinary": "unrelated"}
# A person's message nothing ties to a letter: a reply awaiting triage, or unrelated mail.
PERSONAL = ("reply", "unrelated")


def test_every_corpus_message_is_stored_once_classified_and_its_failures_recorded(engine):
    source = EmlSource([shared_path("corpora", "bounces")])
    assert len(source.files) > 500
    ingester = Ingester(engine, SETTINGS)
    result = IngestResult()
    stored: dict[str, int] = {}
    for path in source.files:
        inbound_id = ingester.record(path.read_bytes(), "corpus", result)
        if inbound_id is not None:
            stored[path.name] = inbound_id
    # Copies of one message (the same Message-ID, sender, date and subject) are stored once.
    assert result.stored + result.duplicates == len(source.files)
    # Broken structures are read as far as they go, and listed for staff.
    assert all("broken MIME" in problem for problem in result.problems)
    with engine.connect() as conn:
        kinds = dict(conn.execute(select(inbound_table.c.id, inbound_table.c.kind)).all())
        failures = Counter(conn.execute(select(failure_table.c.inbound_id)).scalars())
        suppressed = conn.execute(select(func.count()).select_from(suppression_table)).scalar_one()
        complaints_waiting = conn.execute(
            select(func.count()).where(
                inbound_table.c.kind == "complaint", inbound_table.c.triage.is_not(None)
            )
        ).scalar_one()
    wrong = {
        name: kinds[i]
        for name, i in stored.items()
        if kinds[i] != (NOT_AS_FILED.get(name) or KIND[expected_kind(name)])
        and not (kinds[i] in PERSONAL and KIND[expected_kind(name)] in PERSONAL)
    }
    bounces = [name for name, i in stored.items() if kinds[i] == "bounce"]
    without_recipient = [name for name in bounces if not failures.get(stored[name])]
    print(
        f"\ningest: {len(source.files)} files, {result.stored} stored, {result.duplicates} duplicates; "
        f"kinds {dict(Counter(kinds.values()))}; {len(bounces)} bounces, "
        f"{len(bounces) - len(without_recipient)} with their failed recipients recorded; "
        f"{suppressed} addresses suppressed after complaints, {complaints_waiting} complaints waiting "
        f"for staff; {len(result.problems)} with broken MIME"
    )
    assert wrong == {}
    assert without_recipient == []
    # None of these complaints is about a message we sent: they suppress nobody and wait for staff.
    assert suppressed == 0
    assert complaints_waiting == Counter(kinds.values())["complaint"] > 10
    again = Ingester(engine, SETTINGS).ingest(EmlSource([shared_path("corpora", "bounces")]))
    assert (again.stored, again.duplicates) == (0, len(source.files))
