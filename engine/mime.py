"""Assembling a plain-text + HTML email (multipart/alternative) quickly.

Building and serialising an `email.message.EmailMessage` costs about a
millisecond, more than delivering it to a local relay. Every message a
campaign sends has the same shape, so this writes that shape directly: header
values are encoded with the standard library's own RFC 2047 code (`email.header`)
where they are not plain ASCII, and both bodies go as base64 UTF-8, which any
mail server accepts. Tests check the result parses back, with the standard
library, into the same message an EmailMessage would make.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Collection, Mapping
from email.header import Header
from functools import lru_cache

_MAX_PLAIN = 900  # a longer header value is encoded, which also folds it

# What no header value may hold: the C0 controls but tab, DEL, the C1 controls (NEL, U+0085,
# among them) and the Unicode line and paragraph separators. CR and LF would start a header of
# the sender's choosing; the others are line breaks to str.splitlines() and to some mail
# clients, or NULs and escapes that relays refuse and PostgreSQL cannot store.
_NOT_IN_A_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def header_problem(value: str) -> str | None:
    """What in `value` no mail header may hold ('a line break (U+000A)'), or None.

    Names the character, never the value: values are members' personal data.
    """
    # Every character refused is unprintable, and str.isprintable is several times faster than a
    # search: this runs for every header of every message sent.
    found = None if value.isprintable() else _NOT_IN_A_HEADER.search(value)
    if found is None:
        return None
    char = found.group()
    kind = "a line break" if char in _LINE_BREAKS else "a control character"
    return f"{kind} (U+{ord(char):04X})"


def header_problems(
    values: Mapping[str, str | None], *, multiline: Collection[str] = ()
) -> list[tuple[str, str]]:
    """(field, problem) for each value that could not go into a mail header.

    Any imported value may reach one (a template can put any field in a subject). Fields in
    `multiline` (postal addresses) may break lines, but nothing else.
    """
    # The whole row at once first: this runs for every row of a 450,000-member import.
    if header_problem("".join(filter(None, values.values()))) is None:
        return []
    problems = []
    for name, value in values.items():
        for line in (value or "").splitlines() if name in multiline else [value or ""]:
            problem = header_problem(line)
            if problem is not None:
                problems.append((name, f"contains {problem}"))
                break
    return problems


def header_line(name: str, value: str) -> bytes:
    problem = header_problem(value)
    if problem is not None:
        raise ValueError(f"{name}: a header cannot hold {problem}")
    if value.isascii() and len(value) <= _MAX_PLAIN:
        return f"{name}: {value}\r\n".encode("ascii")
    return _encoded(name, value)


@lru_cache(maxsize=4096)
def _encoded(name: str, value: str) -> bytes:
    # email.header is slow (~75 µs); a wave repeats the same few subjects and names.
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def _part(content_type: str, body: str) -> bytes:
    data = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    ).encode("ascii") + data


def alternative(headers: list[tuple[str, str]], text: str, html: str) -> bytes:
    """The whole message as bytes with CRLF line ends, ready for SMTP."""
    seed = "".join(value for _, value in headers).encode("utf-8", "replace")
    # '_' and '=' never occur together in base64 lines, so the boundary cannot clash with the parts.
    boundary = "=_campaign_" + hashlib.blake2b(seed, digest_size=12).hexdigest()
    head = b"".join(header_line(name, value) for name, value in headers)
    head += (
        f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
    ).encode("ascii")
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return (
        head
        + delimiter
        + _part("text/plain", text)
        + b"\r\n"
        + delimiter
        + _part("text/html", html)
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )


def new_message_id(reference: str, kind: str, domain: str) -> str:
    """A Message-ID for one outgoing message: names its letter, and holds a random part.

    Bounces, complaints and replies that quote it are trusted to be about that
    message. The letter's reference is printed on every letter, so without the
    random part anyone who has seen a letter could forge a bounce or a complaint
    about it. Hex keeps it the same when a mail server lowercases a VERP address.
    """
    return f"<{reference}.{kind.replace('_', '-')}.{secrets.token_hex(8)}@{domain}>"


def verp_tag(message_id: str) -> str:
    """The part of a Message-ID carried in its VERP bounce address (bounces+TAG@…)."""
    return message_id.strip("<>").rpartition("@")[0]
