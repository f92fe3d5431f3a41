"""Benchmark: ingest N incoming messages (an mbox) against a launched wave of letters.

The mix is what an organising mailbox sees after a big wave: members' Gmail
forwards of their target's reply (matched by the member's address), direct
replies quoting the reference, RFC 3464 bounces of invitations (matched by the
quoted Message-ID) and out-of-office replies. Prints messages/s, how many
matched, and peak memory.

    python bench/bench_ingest.py --messages 5000
"""

from __future__ import annotations

import argparse
import email
import email.policy
import mailbox
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_launch import peak_mb  # noqa: E402
from bench_send import BENCH_SECRET, prepare  # noqa: E402
from results import stage  # noqa: E402
from sqlalchemy import select  # noqa: E402

from engine.inbox.ingest import Ingester  # noqa: E402
from engine.inbox.sources import MboxSource  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.store.db import open_engine  # noqa: E402
from engine.store.models import letter_table, member_table, outbox_table, utcnow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

FORWARD = """From: {name} <{email}>
To: organising@union.example
Subject: Fwd: Your letter about school inspection
Message-ID: <fwd-{n}@mail.members.example>
Date: Tue, 17 Nov 2026 19:41:07 +0000
Content-Type: text/plain; charset=utf-8

Here is what my MP said.

---------- Forwarded message ---------
From: A Member MP <mp@parliament.example>
Date: Mon, 16 Nov 2026 at 14:12
Subject: RE: Your letter about school inspection
To: {name} <{email}>


Dear {name},

Thank you for your letter. I share your concern and will raise it with the
Secretary of State for Education.

Yours sincerely,
A Member MP
"""

DIRECT = """From: A Member MP <mp.office@parliament.example>
To: organising@union.example
Subject: Re: Your letter about school inspection [Ref: {ref}]
Message-ID: <direct-{n}@parliament.example>
Date: Mon, 16 Nov 2026 15:00:00 +0000
Content-Type: text/plain; charset=utf-8

Thank you for writing. I will reply in full in due course.
"""

BOUNCE = """From: Mail Delivery System <MAILER-DAEMON@mx.union.example>
To: campaigns@union.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-{n}@mx.union.example>
Date: Thu, 12 Nov 2026 09:05:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B{n}"

--B{n}
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--B{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.union.example

Final-Recipient: rfc822; {email}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--B{n}
Content-Type: text/rfc822-headers

Message-ID: {message_id}
Subject: Will you write to your MP?

--B{n}--
"""

AUTO = """From: A Member MP <mp@parliament.example>
To: {name} <{email}>
Subject: Automatic reply: Your letter about school inspection
Message-ID: <auto-{n}@parliament.example>
Date: Thu, 12 Nov 2026 09:03:30 +0000
Auto-Submitted: auto-replied
Content-Type: text/plain; charset=utf-8

I am away from the office until Monday.
"""


def mbox_of_replies(path: Path, rows: list, kinds: tuple[str, ...]) -> None:
    """An mbox of incoming mail about these letters (rows with reference, first_name,
    last_name, email, message_id), the templates taken in turn from `kinds`."""
    box = mailbox.mbox(path)
    for i, row in enumerate(rows):
        text = kinds[i % len(kinds)].format(
            n=i,
            ref=row.reference,
            name=f"{row.first_name} {row.last_name}",
            email=row.email,
            message_id=row.message_id,
        )
        box.add(text.encode())
    box.flush()
    box.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument(
        "--letters", type=int, help="letters the database holds (default: as many as messages)"
    )
    parser.add_argument(
        "--bounce-recipients",
        type=int,
        default=0,
        help="also time one bounce that lists this many failed recipients",
    )
    parser.add_argument("--profile", action="store_true", help="print where the ingest's time goes")
    args = parser.parse_args()
    n = args.messages
    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-ingest-"))
    url = f"sqlite:///{work}/ingest.db"
    prepare(url, max(n, args.letters or 0), work)
    engine = open_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(letter_table.update().values(state="sent", sent_at=now))
        rows = conn.execute(
            select(
                letter_table.c.reference,
                member_table.c.first_name,
                member_table.c.last_name,
                member_table.c.email,
                outbox_table.c.message_id,
            )
            .join(member_table, member_table.c.id == letter_table.c.member_id)
            .join(outbox_table, outbox_table.c.letter_id == letter_table.c.id)
            .order_by(letter_table.c.id)
        ).all()
    kinds = (FORWARD, FORWARD, FORWARD, FORWARD, DIRECT, DIRECT, DIRECT, BOUNCE, BOUNCE, AUTO)
    mbox_of_replies(work / "in.mbox", rows[:n], kinds)
    settings = Settings.from_env({"CAMPAIGN_SECRET": BENCH_SECRET})
    # The anchor: the same messages parsed by the standard library alone, in the same run.
    raw_messages = [message.as_bytes() for message in mailbox.mbox(work / "in.mbox")]
    t = time.perf_counter()
    for raw in raw_messages:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        parsed.get_body(("plain", "html"))
    bare_rate = len(raw_messages) / (time.perf_counter() - t)
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    t = time.perf_counter()
    result = Ingester(engine, settings).ingest(MboxSource(work / "in.mbox"))
    elapsed = time.perf_counter() - t
    if profile is not None:
        import pstats

        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    print(
        f"ingest {result.read:,} messages (SQLite, one transaction each): {elapsed:.1f} s = "
        f"{result.read / elapsed:,.0f} messages/s; kinds {dict(result.kinds)}; "
        f"matched {result.matched:,}, unmatched {result.unmatched:,}, "
        f"letters replied {result.letters_replied:,}"
    )
    if args.bounce_recipients:
        big = big_bounce(rows[: args.bounce_recipients])
        if profile is not None:
            profile = cProfile.Profile()
            profile.enable()
        t = time.perf_counter()
        Ingester(engine, settings).record(big, "bench")
        big_s = time.perf_counter() - t
        stage(
            "ingest, one bounce", len(rows), min(args.bounce_recipients, len(rows)), big_s, unit="recipients"
        )
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        print(
            f"one bounce listing {min(args.bounce_recipients, len(rows)):,} recipients "
            f"({len(big) / 1e6:.1f} MB): {big_s:.2f} s"
        )
    print(
        f"bare parsing:    {bare_rate:,.0f} messages/s (email, default policy); ingest is "
        f"{result.read / elapsed / bare_rate:.0%} of that"
    )
    stage(
        "ingest",
        len(rows),
        result.read,
        elapsed,
        anchor="email parsing of the same messages",
        anchor_per_s=bare_rate,
        letters_held=len(rows),
    )
    print(f"peak RSS: {peak_mb():.0f} MB")
    return 0


def big_bounce(rows: list) -> bytes:
    """One DSN that failed every recipient in `rows`, as a list server's digest bounce does."""
    parts = [
        "From: Mail Delivery System <MAILER-DAEMON@mx.union.example>",
        "To: campaigns@union.example",
        "Subject: Undelivered Mail Returned to Sender",
        "Message-ID: <big-bounce@mx.union.example>",
        "Date: Thu, 12 Nov 2026 09:05:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BIG"',
        "",
        "--BIG",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Your message could not be delivered to some recipients.",
        "",
        "--BIG",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.union.example",
    ]
    for row in rows:
        parts += ["", f"Final-Recipient: rfc822; {row.email}", "Action: failed", "Status: 5.1.1"]
    parts += ["", "--BIG--", ""]
    return "\n".join(parts).encode()


if __name__ == "__main__":
    raise SystemExit(main())
