"""Classifying incoming mail, measured on 500 real bounces, complaints and auto-replies (../shared)."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import shared_path

from engine.inbox.classify import classify_message


def expected_kind(name: str) -> str:
    """What the corpus README says each file is."""
    if name.startswith("arf-"):
        return "complaint"
    if name.startswith("rfc3834-"):
        return "auto_reply"
    if name.startswith(("is-not-bounce", "rb-issue")):
        return "ordinary"
    return "bounce"


@pytest.fixture(scope="module")
def corpus():
    folder = shared_path("corpora", "bounces")
    results = {}
    for path in sorted(folder.glob("*.eml")):
        results[path.name] = classify_message(path.read_bytes())
    return results


def test_every_complaint_and_auto_reply_is_recognised(corpus):
    for name, result in corpus.items():
        if expected_kind(name) in ("complaint", "auto_reply"):
            assert result.kind == expected_kind(name), name


def test_plain_messages_are_not_bounces(corpus):
    for name in ("is-not-bounce-01.eml", "is-not-bounce-02.eml"):
        assert corpus[name].kind == "ordinary", name


def test_bounces_are_recognised_with_their_failed_recipient(corpus):
    bounces = {name: r for name, r in corpus.items() if expected_kind(name) == "bounce"}
    kinds = Counter(r.kind for r in bounces.values())
    with_recipient = sum(1 for r in bounces.values() if r.kind == "bounce" and r.failed)
    print(f"\nbounces: {len(bounces)}; classified {dict(kinds)}; with a failed recipient {with_recipient}")
    # Three the corpus files as bounces are not: two Amazon SES "Delivery" notifications
    # (they report success) and an SES "Complaint" notification (a complaint, so it is one).
    assert kinds == {"bounce": len(bounces) - 3, "ordinary": 2, "complaint": 1}
    assert with_recipient == kinds["bounce"]


def test_a_notice_the_corpus_files_as_ordinary_is_read_as_the_bounce_it_is(corpus):
    # rb-issue-368-bug.eml says "an email you sent was rejected ... reject reason: Mailbox full,
    # target mail address: …": a bounce, for a full mailbox, so worth another try later.
    result = corpus["rb-issue-368-bug.eml"]
    assert result.kind == "bounce"
    assert [(f.address, f.permanent) for f in result.failed] == [("xxxx@yyyyyy.net", False)]


def test_a_standard_report_gives_address_status_and_diagnostic(corpus):
    [failed] = corpus["lhost-postfix-32.eml"].failed
    assert failed.status == "5.1.1"
    assert failed.permanent
    assert "User" in (failed.diagnostic or "")


def test_a_server_specific_notice_gives_the_failed_address(corpus):
    [failed] = corpus["lhost-qmail-01.eml"].failed
    assert failed.address == "kijitora@example.ne.jp"
    assert failed.permanent


def test_parsed_headers_read_as_the_default_policy_reads_them_twice_over(monkeypatch):
    """Ingest's parser remembers the headers it built: every header of every part of the corpus
    reads the same as under the standard default policy, read once and read again after the
    rest of the corpus (when each value comes from what was remembered)."""
    from email import policy

    from engine.inbox import classify

    def headers(message):
        found = []
        for part in message.walk():
            for name in dict.fromkeys(part.keys()):  # each name once: get_all reads them all
                try:
                    values = [str(v) for v in part.get_all(name)]
                except Exception as exc:  # a header the parser cannot model: the same failure
                    values = [type(exc).__name__]
                found.append((name, values, part.get_content_type(), part.get_params()))
        return found

    paths = sorted(shared_path("corpora", "bounces").glob("*.eml"))
    ours = [classify.parse(path.read_bytes()) for path in paths]
    first = [headers(message) for message in ours]
    again = [headers(message) for message in ours]
    monkeypatch.setattr(classify, "INBOUND_POLICY", policy.default)
    for path, once, twice in zip(paths, first, again, strict=True):
        standard = headers(classify.parse(path.read_bytes()))
        assert once == twice == standard, path.name
