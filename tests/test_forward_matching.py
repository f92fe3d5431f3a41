"""Several hundred forwarded replies, from eight mail clients in 26 languages, half of them
without a reference, against a campaign where every member has two open letters (to their
employer and to their MP): each must reach the right letter, or staff, never a wrong letter.

What a member forwards: their employer's answer from the very address we wrote to, from a
colleague at the same council or trust, or from a shared service writing in the employer's
name; an MP's answer; an answer sent as an attached PDF or Word letter; a holding reply; an
out-of-office.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest
from forward_corpus import Reply, build_forward, mixed_set
from sqlalchemy import select
from test_waves import SETTINGS

from engine.inbox.ingest import Ingester
from engine.letters.launch import launch_wave
from engine.letters.waves import WaveSpec, create_wave
from engine.members.importer import import_members
from engine.store.models import employer_table, inbound_table, letter_table, member_table, mp_table, utcnow

MEMBERS = 300
EMPLOYERS = 30
MPS = 40
_FIRST = [
    "Aisha",
    "Ben",
    "Chloe",
    "Dafydd",
    "Ewa",
    "Femi",
    "Grace",
    "Hamza",
    "Isla",
    "Jonah",
    "Kiran",
    "Lena",
]
_LAST = [
    "Khan",
    "Ashworth",
    "Nowak",
    "Okafor",
    "Price",
    "Reid",
    "Singh",
    "Taylor",
    "Usman",
    "Vaughan",
    "Wood",
]

SUPPORTIVE = (
    "Dear {name},\n\nThank you for your letter. We share your concern and we will carry out a risk "
    "assessment of inspection for each of our schools. We have also written to the Secretary of State "
    "for Education.\n\nYours sincerely,\n{author}"
)
REFUSAL = (
    "Dear {name},\n\nThank you for writing. We are not in a position to commit to a separate risk "
    "assessment for inspection, which we consider is covered by existing policies.\n\nRegards,\n{author}"
)
HOLDING = (
    "Dear {name},\n\nThank you for your letter. We are currently considering the points you raise and "
    "will respond in full after the next trust meeting.\n\nKind regards,\n{author}"
)
AWAY = (
    "Thank you for your email. I am out of the office until Monday 23 November with limited access to email."
)
ATTACHED = "Dear {name},\n\nPlease find attached our response to your letter.\n\n{author}"


def _pdf(text: str) -> bytes:
    from weasyprint import HTML

    body = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
    return HTML(string=f"<html><body>{body}</body></html>").write_pdf()


def _docx(text: str) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in text.split("\n\n"):
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _employer(k: int) -> dict:
    if k % 2:
        return {
            "employer_key": f"la:{800 + k}",
            "name": f"{['North', 'South', 'East', 'West', 'Mid'][k % 5]} Shire {k} County Council",
            "kind": "local_authority",
            "email": f"schools.hr@shire{k}-council.example",
            "salutation": "Dear Director of Education",
        }
    return {
        "employer_key": f"trust:{4000 + k}",
        "name": f"Riverside {k} Academies Trust",
        "kind": "academy_trust",
        "email": f"ceo@riverside{k}-trust.example",
        "salutation": "Dear Chief Executive",
    }


@pytest.fixture
def campaign(engine, tmp_path):
    path = tmp_path / "members.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["Membership No", "First Name", "Last Name", "Email", "Postcode", "School URN"])
        for i in range(MEMBERS):
            first, last = _FIRST[i % len(_FIRST)], _LAST[(i // len(_FIRST)) % len(_LAST)]
            out.writerow([f"M{300000 + i}", first, last, f"{first}.{last}.{i}@members.example.org".lower(),
                          "SW1A 1AA", str(200000 + i)])  # fmt: skip
    import_members(engine, path)
    employers = [_employer(k) for k in range(EMPLOYERS)]
    with engine.begin() as conn:
        conn.execute(employer_table.insert(), employers)
        conn.execute(
            mp_table.insert(),
            [
                {
                    "constituency_code": f"E14{k:06d}",
                    "constituency_name": f"Seat {k}",
                    "name": f"Member {k} MP",
                    "email": f"member{k}.mp@parliament.example",
                    "address_as": f"Ms Member {k}",
                    "source": "csv",
                }
                for k in range(MPS)
            ],
        )
        ids = conn.execute(select(member_table.c.id).order_by(member_table.c.id)).scalars().all()
        for i, member_id in enumerate(ids):
            employer = employers[i % EMPLOYERS]
            conn.execute(
                member_table.update()
                .where(member_table.c.id == member_id)
                .values(
                    mp_status="resolved",
                    constituency_code=f"E14{i % MPS:06d}",
                    constituency_name=f"Seat {i % MPS}",
                    employer_status="resolved",
                    employer_key=employer["employer_key"],
                    employer_name=employer["name"],
                )
            )
    for name, target, letter in (
        ("Employers", "employer", "employer-wellbeing"),
        ("MPs", "mp", "mp-inspection"),
    ):
        create_wave(
            engine, name, WaveSpec(target=target, letter=letter, invite="invitation", nations="all"), SETTINGS
        )
        assert launch_wave(engine, name, SETTINGS).created == MEMBERS
    with engine.begin() as conn:
        conn.execute(letter_table.update().values(state="sent", sent_at=utcnow()))
    return engine, {e["employer_key"]: e for e in employers}


def _letters(engine) -> dict[tuple[int, str], dict]:
    """Each member's letter to their employer and to their MP, by (member id, target kind)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(letter_table, member_table.c.email, member_table.c.first_name, member_table.c.last_name)
            .join(member_table, member_table.c.id == letter_table.c.member_id)
            .where(letter_table.c.kind == "letter")
        ).all()
    return {(r.member_id, r.target_kind): dict(r._mapping) for r in rows}


def test_hundreds_of_forwards_reach_their_letters_and_none_a_wrong_one(campaign):
    engine, employers = campaign
    letters = _letters(engine)
    members = sorted({member_id for member_id, _ in letters})
    pdf = _pdf(SUPPORTIVE.format(name="colleague", author="Director of Education"))
    ingester = Ingester(engine, SETTINGS)
    expected: dict[int, tuple[int, str]] = {}  # inbound id → (letter id, what it is)
    make_up: Counter = Counter()
    for i, (client, language) in enumerate(mixed_set(MEMBERS)):
        member_id = members[i]
        to_mp = i % 5 == 4
        letter = letters[(member_id, "mp" if to_mp else "employer")]
        member_name = f"{letter['first_name']} {letter['last_name']}"
        if to_mp:
            author_name, author_addr, how = letter["target_name"], letter["target_email"], "mp"
        else:
            employer = employers[letter["target_key"]]
            domain = employer["email"].partition("@")[2]
            how = ("same address", "colleague", "shared service")[i % 3]
            author_name, author_addr = {
                "same address": (letter["target_name"], employer["email"]),
                "colleague": ("Jo Whitfield", f"jo.whitfield@{domain}"),
                "shared service": (
                    f"HR Services, {employer['name']}",
                    f"no-reply@schools-hr-{i}.example.net",
                ),
            }[how]
        kind = ("supportive", "refusal", "supportive", "holding", "away", "pdf", "docx", "refusal")[i % 8]
        body = {"supportive": SUPPORTIVE, "refusal": REFUSAL, "holding": HOLDING, "away": AWAY}.get(
            kind, ATTACHED
        )
        reply = Reply(author_name, author_addr, f"RE: {letter['subject']}",
                      body.format(name=member_name, author=author_name))  # fmt: skip
        attachment = None
        if kind == "pdf":
            attachment = ("Response to your letter.pdf", "application/pdf", pdf)
        elif kind == "docx":
            text = REFUSAL.format(name=member_name, author=author_name)
            attachment = ("Reply.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                          _docx(text))  # fmt: skip
        reference = f"Ref: {letter['reference']}" if i % 2 == 0 else None
        built = build_forward(
            client, language, reply, member_name, letter["email"], reference=reference, attachment=attachment
        )
        inbound_id = ingester.record(built.raw, "eml")
        expected[inbound_id] = (letter["id"], kind)
        make_up[(how, "with reference" if reference else "without reference")] += 1

    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(inbound_table))}
        follow_ups = set(
            conn.execute(select(letter_table.c.parent_id).where(letter_table.c.kind == "follow_up")).scalars()
        )
        replied = {r.id: r.state for r in conn.execute(select(letter_table.c.id, letter_table.c.state))}
    wrong = [i for i, row in rows.items() if row.letter_id is not None and row.letter_id != expected[i][0]]
    assert wrong == [], f"{len(wrong)} forwards matched to a wrong letter"
    answers = {i: v for i, v in expected.items() if v[1] not in ("holding", "away")}
    right = [
        i
        for i, (letter_id, _) in answers.items()
        if rows[i].letter_id == letter_id
        and rows[i].kind == "reply"
        and replied[letter_id] in ("replied", "followed_up")
        and (letter_id in follow_ups or letters_kind(letters, letter_id) == "mp")
    ]
    share = len(right) / len(answers)
    print(f"\nforwards: {len(expected)}; answers {len(answers)}, matched and followed up {len(right)} "
          f"({share:.1%}); make-up {dict(make_up)}")  # fmt: skip
    assert share >= 0.95
    # A holding reply is matched and answers nothing yet; an out-of-office forward is no reply.
    for i, (letter_id, kind) in expected.items():
        if kind == "holding" and rows[i].letter_id == letter_id:
            assert letter_id not in follow_ups
        if kind == "away":
            assert rows[i].kind == "auto_reply", (i, rows[i].subject)
            assert replied[letter_id] == "sent"
    # The outcome suggestion reads the attached letter, and the attachment is named on the reply.
    for i, (letter_id, kind) in expected.items():
        if kind in ("pdf", "docx") and rows[i].letter_id == letter_id:
            assert rows[i].suggested_outcome == ("supportive" if kind == "pdf" else "refusal")
            assert rows[i].attachment_name in ("Response to your letter.pdf", "Reply.docx")


def letters_kind(letters: dict, letter_id: int) -> str:
    return next(kind for (_, kind), letter in letters.items() if letter["id"] == letter_id)


def test_a_forward_that_could_answer_either_letter_goes_to_staff_with_both(campaign):
    engine, _ = campaign
    from engine.inbox.staff import show_message

    letters = _letters(engine)
    member_id = min(member_id for member_id, _ in letters)
    employer, mp = letters[(member_id, "employer")], letters[(member_id, "mp")]
    reply = Reply("A Caseworker", "caseworker@constituency-office.example", "Your email",
                  "Thank you for getting in touch; I have noted your concerns.")  # fmt: skip
    member_name = f"{employer['first_name']} {employer['last_name']}"
    built = build_forward("thunderbird", "fi", reply, member_name, employer["email"])
    inbound_id = Ingester(engine, SETTINGS).record(built.raw, "eml")
    shown = show_message(engine, inbound_id)
    assert (shown["kind"], shown["letter_id"], shown["forwarded"]) == ("reply", None, True)
    assert {s["reference"] for s in shown["suggestions"]} == {employer["reference"], mp["reference"]}
    with engine.connect() as conn:
        states = set(
            conn.execute(
                select(letter_table.c.state).where(letter_table.c.id.in_([employer["id"], mp["id"]]))
            ).scalars()
        )
    assert states == {"sent"}


def test_the_subject_chooses_between_two_letters_when_the_author_cannot(campaign):
    engine, _ = campaign
    letters = _letters(engine)
    member_id = max(member_id for member_id, _ in letters)
    employer, mp = letters[(member_id, "employer")], letters[(member_id, "mp")]
    # The MP answered from a personal address: neither letter's address or domain.
    reply = Reply("Sam Okafor", "sam.okafor.constituency@mailbox.example", f"Re: {mp['subject']}",
                  "Dear constituent,\n\nI have raised the inspection framework with the Secretary of State.")  # fmt: skip
    member_name = f"{employer['first_name']} {employer['last_name']}"
    inbound_id = Ingester(engine, SETTINGS).record(
        build_forward("apple_mail", "sv", reply, member_name, employer["email"]).raw, "eml"
    )
    with engine.connect() as conn:
        row = conn.execute(select(inbound_table).where(inbound_table.c.id == inbound_id)).one()
        states = dict(
            conn.execute(
                select(letter_table.c.id, letter_table.c.state).where(
                    letter_table.c.id.in_([employer["id"], mp["id"]])
                )
            ).all()
        )
    assert (row.letter_id, row.match_method) == (mp["id"], "sender")
    assert states == {mp["id"]: "replied", employer["id"]: "sent"}
