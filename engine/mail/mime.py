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
import string
from collections.abc import Sequence
from email.header import Header
from functools import lru_cache

from engine.members.validation import header_problem

_MAX_PLAIN = 900  # a longer header value is encoded, which also folds it


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


def attachment_part(filename: str, media_type: str, data: bytes) -> bytes:
    """One attached file as a MIME part (headers and base64 body, CRLF line ends), built once per
    wave and reused for every letter. The filename goes quoted when it is short plain ASCII, else
    in RFC 2231 form (`filename*=utf-8''…`), split into numbered pieces to keep lines short.

    Written here rather than by the email package, whose folding of a long content type beside
    an encoded parameter breaks the type (application/=?utf-8?q?vnd…).
    """
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        f"Content-Type: {media_type};\r\n{_parameter('name', filename)}\r\n"
        f"Content-Disposition: attachment;\r\n{_parameter('filename', filename)}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii") + body


# RFC 2231 attribute-char: what may stand unencoded in an extended parameter value.
_ATTRIBUTE_CHARS = frozenset(b"!#$&+-.^_`|~" + string.ascii_letters.encode() + string.digits.encode())


def _parameter(name: str, value: str) -> str:
    """` name="value"`, or its RFC 2231 form in continuation lines of at most ~70 characters."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value and len(value) < 60:
        return f' {name}="{value}"'
    encoded = [chr(b) if b in _ATTRIBUTE_CHARS else f"%{b:02X}" for b in value.encode("utf-8")]
    pieces: list[str] = []
    current = "utf-8''"
    for token in encoded:
        if len(current) + len(token) > 60:
            pieces.append(current)
            current = ""
        current += token
    pieces.append(current)
    if len(pieces) == 1:
        return f" {name}*={pieces[0]}"
    return ";\r\n".join(f" {name}*{i}*={piece}" for i, piece in enumerate(pieces))


def alternative(
    headers: list[tuple[str, str]], text: str, html: str, attachments: Sequence[bytes] = ()
) -> bytes:
    """The whole message as bytes with CRLF line ends, ready for SMTP: the text and HTML as
    alternatives, inside multipart/mixed with `attachments` (from attachment_part) when there are any."""
    seed = "".join(value for _, value in headers).encode("utf-8", "replace")
    # '_' and '=' never occur together in base64 lines, so the boundary cannot clash with the parts.
    boundary = "=_campaign_" + hashlib.blake2b(seed, digest_size=12).hexdigest()
    head = b"".join(header_line(name, value) for name, value in headers) + b"MIME-Version: 1.0\r\n"
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = (
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii")
        + delimiter
        + _part("text/plain", text)
        + b"\r\n"
        + delimiter
        + _part("text/html", html)
        + f"\r\n--{boundary}--\r\n".encode("ascii")
    )
    if not attachments:
        return head + body
    mixed = boundary.replace("=_campaign_", "=_campaign_mixed_")
    outer = f"--{mixed}\r\n".encode("ascii")
    return b"".join(
        [
            head,
            f'Content-Type: multipart/mixed; boundary="{mixed}"\r\n\r\n'.encode("ascii"),
            outer,
            body,
            *(part for attachment in attachments for part in (b"\r\n", outer, attachment)),
            f"\r\n--{mixed}--\r\n".encode("ascii"),
        ]
    )
