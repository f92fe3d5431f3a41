"""A forward is recognised by its shape, whatever the mail client and its language.

The forwards are built the way each client lays them out (tests/forward_corpus.py):
Gmail, Outlook desktop, Outlook on the web, new Outlook, Apple Mail, Thunderbird and
Yahoo (plain and HTML), in 26 languages, Nordic, Slavic (Latin and Cyrillic), Turkish,
Greek, Japanese, Chinese and Korean among them.
"""

from __future__ import annotations

import email
from email import policy
from email.message import Message

import pytest
from forward_corpus import CLIENTS, LANGUAGES, NORDIC, REPLY_MOMENT, SLAVIC, Reply, build_forward
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.inbox.documents import DOCX, attached_documents
from engine.inbox.forwards import body_text, find_attached, find_inline, label_meaning

REPLY = Reply(
    author_name="Marion Lloyd",
    author_addr="m.lloyd@kent.example.gov.uk",
    subject="RE: Protecting school leaders and their teams",
    text=(
        "Dear Ms Khan,\n\nThank you for your letter. We will carry out a risk assessment of "
        "inspection for your school this term.\n\nYours sincerely,\nMarion Lloyd"
    ),
)
NOTE = "Please see the reply I had from the council."


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=policy.default)


def read(raw: bytes):
    message = parsed(raw)
    return find_attached(message) or find_inline(body_text(message))


def test_the_corpus_covers_the_clients_and_languages_the_campaign_meets():
    assert len(CLIENTS) == 8 and len(LANGUAGES) >= 15
    assert set(NORDIC) <= set(LANGUAGES) and set(SLAVIC) <= set(LANGUAGES)
    assert {"ru", "uk"} <= set(LANGUAGES) and {"tr", "ja"} <= set(LANGUAGES)


@pytest.mark.parametrize("language", sorted(LANGUAGES))
@pytest.mark.parametrize("client", CLIENTS)
def test_a_forward_from_any_client_in_any_language_gives_its_author_date_subject_and_words(client, language):
    built = build_forward(client, language, REPLY, "Aisha Khan", "aisha.khan@members.example.org", note=NOTE)
    found = read(built.raw)
    assert found is not None, f"{client}/{language}: not recognised as a forward"
    assert (found.author_name, found.author_addr) == (REPLY.author_name, REPLY.author_addr)
    assert found.date is not None and found.date.replace(second=0) == REPLY_MOMENT
    assert found.subject == REPLY.subject
    assert "aisha.khan@members.example.org" in (found.to or "")
    # The employer's words, not the member's note above the block.
    assert "carry out a risk assessment" in found.text and NOTE not in found.text
    assert found.text.endswith("Marion Lloyd")


def test_yahoos_one_line_block_is_read_header_by_header():
    built = build_forward("yahoo_plain", "en", REPLY, "Aisha Khan", "aisha.khan@members.example.org")
    text = body_text(parsed(built.raw))
    squeezed = next(line for line in text.splitlines() if "Forwarded Message" in line)
    assert "From:" in squeezed and "Subject:" in squeezed  # the layout really is one line
    found = find_inline(text)
    assert found is not None and found.author_addr == REPLY.author_addr
    assert found.subject == REPLY.subject  # "Subject: RE: …" keeps its "RE:"


def test_the_reply_stops_where_it_quotes_the_letter_or_its_signature_begins():
    reply = Reply(
        REPLY.author_name,
        REPLY.author_addr,
        REPLY.subject,
        "We will reply in full next week.\n\n-- \nMarion Lloyd, Head of HR\n\n"
        "On Fri, 13 Nov 2026 at 09:00, Aisha Khan <aisha.khan@members.example.org> wrote:\n> Dear Ms Lloyd,",
    )
    found = read(build_forward("gmail", "de", reply, "Aisha Khan", "aisha.khan@members.example.org").raw)
    assert found.text == "We will reply in full next week."
    quoted = Reply(
        REPLY.author_name,
        REPLY.author_addr,
        REPLY.subject,
        "Noted, thank you.\n\n2026年11月13日(金) 9:00 Aisha Khan <aisha.khan@members.example.org>:\n> Dear Ms Lloyd,",
    )
    found = read(
        build_forward("thunderbird", "ja", quoted, "Aisha Khan", "aisha.khan@members.example.org").raw
    )
    assert found.text == "Noted, thank you."


def test_prose_with_colons_and_addresses_is_not_taken_for_a_forward():
    text = (
        "Hello,\n\nNote: I have copied my rep, Sam <sam.rep@members.example.org>, who asked: what next?\n"
        "Phone: 01632 960 123\nThanks\n"
    )
    assert find_inline(text) is None
    # A signature with an address and a phone number is not a header block either.
    assert find_inline("Regards,\nSam\nEmail: sam@members.example.org\nMobile: 07700 900 123\n") is None


# ---- any labels, in any script ----------------------------------------------------

_ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyzäöüéèçñšžł",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщыэюяіїє",
    "greek": "αβγδεζηθικλμνξοπρστυφχψω",
    "cjk": "差出人宛先件名日付送信転送発件收主题期",
    "hangul": "보낸사람받는날짜제목참조전달",
    "arabic": "منإلىتاريخالموضوعأرسل",
}


@st.composite
def labels(draw):
    alphabet = _ALPHABETS[draw(st.sampled_from(sorted(_ALPHABETS)))]
    word = st.text(alphabet=alphabet, min_size=2, max_size=9)
    chosen = draw(st.lists(word, min_size=4, max_size=4, unique=True))
    capitalise = draw(st.booleans())
    return [w.capitalize() if capitalise else w for w in chosen]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=labels(),
    order=st.permutations(["from", "date", "subject", "to"]),
    separator=st.sampled_from(["", "---------- {} ----------", "-----{}-----", "{}:", "_" * 32]),
    colon=st.sampled_from([":", " :", "："]),
    date=st.sampled_from(["16.11.2026 14:12", "2026-11-16 14:12", "Mon, 16 Nov 2026 14:12:09 +0000"]),
)
def test_any_block_of_labelled_lines_with_the_senders_address_and_a_date_is_a_forward(
    names, order, separator, colon, date
):
    # The sender line must come before the recipient line, as in every client seen.
    if order.index("from") > order.index("to"):
        order = [("to" if f == "from" else "from" if f == "to" else f) for f in order]
    values = {
        "from": "Marion Lloyd <m.lloyd@kent.example.gov.uk>",
        "date": date,
        "subject": "RE: Protecting school leaders and their teams",
        "to": "Aisha Khan <aisha.khan@members.example.org>",
    }
    label = dict(zip(["from", "date", "subject", "to"], names, strict=True))
    # A made-up word that happens to be a real label for another line (Russian "от" is From)
    # says nothing about this block; real labels only ever say what their own line is.
    assume(
        all(
            label_meaning(word) in (None, field, "sent" if field == "date" else field)
            for field, word in label.items()
        )
    )
    block = [f"{label[f]}{colon} {values[f]}" for f in order]
    lines = ["Forwarding this.", ""]
    if separator:
        lines.append(separator.format(names[0]))
    text = "\n".join(lines + block + ["", REPLY.text])
    found = find_inline(text)
    assert found is not None, text
    assert found.author_addr == "m.lloyd@kent.example.gov.uk"
    assert found.date is not None
    assert "carry out a risk assessment" in found.text


# ---- replies sent as documents ----------------------------------------------------


def _with_attachment(filename: str, mime: str, data: bytes) -> Message:
    built = build_forward(
        "gmail",
        "en",
        REPLY,
        "Aisha Khan",
        "aisha.khan@members.example.org",
        attachment=(filename, mime, data),
    )
    return parsed(built.raw)


def test_a_word_letter_attached_to_a_reply_is_read():
    import io

    import docx

    document = docx.Document()
    document.add_paragraph("We support your request and will write to the Secretary of State.")
    out = io.BytesIO()
    document.save(out)
    found = attached_documents(_with_attachment("Reply.docx", DOCX, out.getvalue()))
    assert [(d.filename, d.kind, d.problem) for d in found] == [("Reply.docx", "docx", None)]
    assert "write to the Secretary of State" in found[0].text


def test_a_broken_or_hostile_document_is_named_and_never_stops_the_message():
    import io
    import zipfile

    broken = _with_attachment("letter.pdf", "application/pdf", b"%PDF-1.7\n this is not a PDF at all")
    assert [(d.kind, d.text) for d in attached_documents(broken)] == [("pdf", "")]
    assert attached_documents(broken)[0].problem
    # A "Word document" whose zip would inflate to gigabytes is not unpacked.
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * (60 * 1024 * 1024))
    found = attached_documents(_with_attachment("Reply.docx", DOCX, bomb.getvalue()))
    assert found[0].text == "" and "could not be read" in found[0].problem
    # Any other attachment is not a document of the reply.
    assert attached_documents(_with_attachment("photo.png", "image/png", b"\x89PNG\r\n\x1a\n")) == []
