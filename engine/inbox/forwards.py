"""Finding the message a member forwarded: its real author, date, subject and words.

Members pass on their employer's reply in whatever mail client they use, in
whatever language it speaks. Some attach it whole (message/rfc822); most paste
it inline under a block of header lines in the client's own words: Gmail's
"---------- Forwarded message ---------" then From/Date/Subject/To, Outlook's
From/Sent/To/Subject under a rule, Apple Mail's "Begin forwarded message:",
Thunderbird's Subject/Date/From/To, Yahoo's whole block run into one line, and
each of them as "Von:", "Od:", "Kimden:", "От:", "差出人：" and so on. No list of
phrases can keep up, so a forward is recognised by its shape: a run of
`Label: value` lines, in any script, where one value holds an address and one
a date (or which sits under a separator line). A table of known labels only
says which line is which when it knows them; what a line holds decides.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from engine.inbox.classify import READ_LIMIT, content_type, strip_tags

# Header labels mail clients write in forwards, by meaning (lower case, without the colon). The
# shape of a block decides whether it is a forward; these only say which line is which when they
# know the label, and a label they do not know is read by what its value holds.
# fmt: off
_LABELS = {
    "from": (
        "from", "von", "de", "da", "van", "od", "från", "fra", "lähettäjä", "feladó", "от", "від",
        "gönderen", "expéditeur", "remitente", "mittente", "afsender", "oddi wrth", "anfonwr", "odesílatel",
        "kimden", "saatja", "de la", "από", "差出人", "发件人", "寄件者", "보낸 사람",
    ),
    "to": (
        "to", "an", "à", "a", "para", "aan", "do", "till", "til", "vastaanottaja", "címzett", "кому",
        "kime", "at", "destinataire", "destinatario", "komu", "alıcı", "pour", "za", "către",
        "adressaat", "προς", "宛先", "收件人", "받는 사람",
    ),
    "cc": (
        "cc", "kopie", "copie", "cópia", "kopia", "kopio", "másolat", "копия", "копія", "bilgi", "cc/bcc",
        "dw", "kópia", "kopija", "koopia", "kopi", "másolatot kap", "κοιν", "抄送", "참조",
    ),
    "date": (
        "date", "datum", "fecha", "data", "päivämäärä", "dátum", "дата", "tarih", "dyddiad", "dato",
        "kuupäev", "dată", "ημερομηνία", "日付", "日期", "날짜",
    ),
    "sent": (
        "sent", "gesendet", "envoyé", "enviado", "inviato", "verzonden", "wysłano", "wysłane", "skickat",
        "sendt", "lähetetty", "elküldve", "отправлено", "надіслано", "gönderildi", "anfonwyd",
        "odesláno", "odoslané", "poslano", "trimis", "saadetud", "enviada", "στάλθηκε", "送信日時",
        "发送时间", "보낸 날짜",
    ),
    "subject": (
        "subject", "betreff", "objet", "sujet", "asunto", "oggetto", "onderwerp", "temat", "ämne", "emne",
        "aihe", "tárgy", "тема", "konu", "assunto", "pwnc", "předmět", "predmet", "subiect", "teema",
        "θέμα", "件名", "主题", "제목",
    ),
}
# fmt: on
_FIELD_OF = {label: name for name, labels in _LABELS.items() for label in labels}
# "From: x", "*From:* x" (Outlook's plain text of bold labels), "De : x" (French spacing),
# "差出人：x" (a full-width colon), "> From: x"; the label is one to four words in any script.
_WORD = r"[^\W\d_][^\W\d_'.]*"
_HEADER_LINE = re.compile(
    rf"^\s*(?:>\s*)*[*_]*\s*({_WORD}(?: {_WORD}){{0,3}})\s*[*_]*\s*[:：]\s*[*_]*\s*(.*?)\s*$"
)
_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# A date as a forward block writes it, in any language: a year and at least one more number
# (a day, a time): "16.11.2026 14:12", "2026年11月16日", "Monday, November 16, 2026 2:12 PM".
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)")
_NUMBER = re.compile(r"\d+")
# A line that only opens what follows: "-----Original Message-----", "---------- Forwarded message
# ---------", a rule of underscores, "Begin forwarded message:", "-------- 転送されたメッセージ --------".
_SEPARATOR = re.compile(r"^\s*(?:[-_=*~]{2,}.{0,60}?[-_=*~]{2,}|[-_=]{8,})\s*$")
_INTRO = re.compile(r"^\s*[^\W\d_][^:：\d@]{0,60}[:：]\s*$")


_RFC5322_DATE = re.compile(
    r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?\s*(?:[+-]\d{4}|[A-Z]{1,5})?"
    r"(?:\s*\(.*\))?$"
)


@dataclass
class Forwarded:
    """The forwarded message, as far as its wrapper shows it."""

    author_name: str | None
    author_addr: str | None
    date: datetime | None
    subject: str | None
    to: str | None
    text: str
    attached: bool = False
    # The block came under a separator line ("---- Forwarded message ----", "Begin forwarded message:").
    after_separator: bool = False


def parse_date(value: str) -> datetime | None:
    """A date as a header or a mail client's forward block writes it, in any common language."""
    value = " ".join(value.split())
    if not value:
        return None
    parsed = None
    # The standard library reads RFC 5322 dates, and would misread "2:12 PM" in others.
    if _RFC5322_DATE.match(value):
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
    if parsed is None:
        parsed = _common_english(value)
    if parsed is None:
        import dateparser  # slow, and slow to import: for the dates the formats below miss

        parsed = dateparser.parse(
            value,
            settings={"DATE_ORDER": "DMY", "RETURN_AS_TIMEZONE_AWARE": True, "TIMEZONE": "Europe/London"},
        )
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# How English-language clients write dates in forward blocks, tried before the general parser.
_ENGLISH_FORMATS = (
    "%a, %d %b %Y %H:%M",  # Gmail: "Mon, 16 Nov 2026 at 14:12" (with "at" removed)
    "%d %B %Y %H:%M:%S %Z",  # Apple Mail: "16 November 2026 at 14:12:09 GMT"
    "%d %B %Y %H:%M:%S",
    "%d %B %Y %H:%M",  # Outlook: "16 November 2026 16:40"
    "%A, %B %d, %Y %I:%M %p",  # Outlook (US): "Monday, November 16, 2026 2:12 PM"
    "%A, %d %B %Y %H:%M",  # Outlook (UK): "Monday, 16 November 2026 14:12"
    "%A, %d %B %Y, %H:%M:%S %Z",  # Yahoo: "Monday, 16 November 2026, 14:12:09 GMT"
)


def _common_english(value: str) -> datetime | None:
    cleaned = re.sub(r"\s+at\s+", " ", value)
    for form in _ENGLISH_FORMATS:
        try:
            parsed = datetime.strptime(cleaned, form)
        except ValueError:
            continue
        if parsed.tzinfo is None and cleaned.endswith(("GMT", "UTC")):
            parsed = parsed.replace(tzinfo=UTC)
        elif parsed.tzinfo is None:
            # Forward blocks give local time: the union's members are in the UK.
            from zoneinfo import ZoneInfo

            parsed = parsed.replace(tzinfo=ZoneInfo("Europe/London"))
        return parsed
    return None


def _labelled(line: str) -> tuple[str, str] | None:
    """(label, value) of a line shaped like a header line, in any language, or None."""
    match = _HEADER_LINE.match(line)
    if not match:
        return None
    return " ".join(match.group(1).lower().split()).rstrip("."), match.group(2).strip()


def label_meaning(label: str) -> str | None:
    """What a known forward-block label stands for (from, to, cc, date, sent, subject), or None."""
    return _FIELD_OF.get(" ".join(label.lower().split()).rstrip("."))


def _header_field(line: str) -> tuple[str, str] | None:
    """(meaning, value) of a header line whose label is a known one."""
    labelled = _labelled(line)
    if labelled is None:
        return None
    field = _FIELD_OF.get(labelled[0])
    return (field, labelled[1]) if field else None


def _is_date(value: str) -> bool:
    return bool(_YEAR.search(value)) and len(_NUMBER.findall(value)) >= 2 and "@" not in value


def _author(value: str) -> tuple[str | None, str | None]:
    # Outlook writes "Name <mailto:x@y>" or "Name [mailto:x@y]"; Gmail "Name <x@y>".
    value = re.sub(r"\[mailto:([^\]]+)\]", r"<\1>", value).replace("mailto:", "")
    name, addr = parseaddr(value)
    if "@" not in addr or not _ADDRESS.fullmatch(addr):
        found = _ADDRESS.search(value)
        addr = found.group(0) if found else ""
        before = value[: found.start()] if found else value
        name = before.strip(" <>[]\"'") or None
    return (name.strip("\"' ") or None) if name else None, (addr.lower() or None)


@dataclass
class _Block:
    """A run of header lines: what each line holds, and where the run ends."""

    fields: list[tuple[str, str]]
    end: int
    after_separator: bool

    def meaning(self, index: int) -> str | None:
        return _FIELD_OF.get(self.fields[index][0])

    def pick(self) -> dict[str, str] | None:
        """The author, date, subject and recipients of a forward block, or None when the run is
        not one: it needs an author with an address and a date (or, after a separator line or
        with known labels, a subject in their place)."""
        meanings = [self.meaning(i) for i in range(len(self.fields))]
        values = [value for _, value in self.fields]
        with_address = [i for i, v in enumerate(values) if _ADDRESS.search(v)]
        # A known label ranks a line; what the line holds decides. The author: a From line with
        # an address, else the first line with an address that is not a known recipient line,
        # else a From line with a name only (Outlook shows colleagues' names without addresses).
        named = [i for i, m in enumerate(meanings) if m == "from"]
        author = next((i for i in named if i in with_address), None)
        if author is None:
            author = next((i for i in with_address if meanings[i] not in ("to", "cc")), None)
        if author is None and named:
            author = named[0]
        if author is None:
            return None
        dates = [i for i, v in enumerate(values) if i != author and _is_date(v)]
        dates = [i for i in dates if meanings[i] in ("date", "sent")] or dates
        if not dates:
            dates = [i for i, m in enumerate(meanings) if m in ("date", "sent") and values[i]]
        plain = [i for i, v in enumerate(values) if i != author and i not in dates and not _ADDRESS.search(v)]
        subjects = [i for i in plain if meanings[i] == "subject"] or plain
        known = sum(m is not None for m in meanings)
        shaped = bool(dates) and (len(self.fields) >= 3 or self.after_separator)
        labelled = meanings[author] == "from" and known >= 3 and bool(dates or subjects)
        if not (shaped or labelled or (self.after_separator and bool(subjects) and author in with_address)):
            return None
        recipients = [i for i, m in enumerate(meanings) if m == "to"]
        recipients = recipients or [i for i in with_address if i != author and meanings[i] != "cc"]
        return {
            "from": values[author],
            "date": values[dates[0]] if dates else "",
            "subject": values[subjects[0]] if subjects else "",
            "to": values[recipients[0]] if recipients else "",
        }


_CONTINUES_RECIPIENTS = re.compile(r"[@;]")


def _run(lines: list[str], start: int) -> _Block | None:
    """The header lines starting at `start` (2 to 10 of them), or None."""
    fields: list[tuple[str, str]] = []
    index = start
    blanks = 0
    while index < len(lines) and len(fields) < 10:
        line = lines[index]
        bare = line.lstrip(" \t>")  # Apple Mail quotes the whole forward, header lines included
        if not bare.strip():
            # Outlook on the web leaves a blank line between header lines; two end the block.
            blanks += 1
            if blanks > 1:
                break
            index += 1
            continue
        labelled = _labelled(line)
        if labelled is None:
            if blanks == 0 and fields and _CONTINUES_RECIPIENTS.search(bare) and ":" not in bare:
                index += 1  # a long recipient list wrapped onto the next line
                continue
            break
        if any(label == labelled[0] for label, _ in fields):
            break  # the next message's block begins
        fields.append(labelled)
        blanks = 0
        index += 1
    if len(fields) < 2:
        return None
    before = [line for line in lines[max(0, start - 3) : start] if line.strip()]
    after_separator = bool(before) and bool(
        _SEPARATOR.match(before[-1].lstrip(" >")) or _INTRO.match(before[-1].lstrip(" >"))
    )
    return _Block(fields, index, after_separator)


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    word = name.split(" ", 1)[0]
    return "CJK" if word in ("CJK", "HIRAGANA", "KATAKANA") else word


_COLON_BEFORE_WORDS = re.compile(r"[:：](?=\s|$)")


def _unsqueeze(line: str) -> list[str]:
    """A header block written on one line (Yahoo's plain text: "----- Forwarded Message -----
    From: A <a@x>To: B <b@y>Sent: …Subject: …") as one line per header; other lines unchanged."""
    if "@" not in line or len(line) < 30:
        return [line]
    cuts: list[tuple[int, int]] = []  # (where the label starts, where its colon is)
    for colon in _COLON_BEFORE_WORDS.finditer(line):
        end = colon.start()
        begin = end
        while begin > 0 and line[begin - 1].isalpha():
            begin -= 1
        if begin == end:
            continue
        word = line[begin:end]
        # The label glued to the value before it: where the script changes, or where a
        # capitalised word begins ("…example.orgSent", "…GMTSubject", "…orgКому").
        for k in range(len(word) - 1, 0, -1):
            if _script(word[k]) != _script(word[k - 1]):
                begin += k
                break
            if word[k].isupper() and (
                not word[k - 1].isupper() or (k + 1 < len(word) and word[k + 1].islower())
            ):
                begin += k
                break
        else:
            # Glued to what comes before ("…14:12Betreff"): only a capitalised or uncased word.
            if begin > 0 and not line[begin - 1].isspace() and word[0].islower():
                continue
        # A two-word label ("De la", "보낸 사람"): the word before it belongs to it.
        previous = re.search(r"(\w+) $", line[:begin])
        if previous and f"{previous.group(1)} {line[begin:end]}".lower() in _FIELD_OF:
            begin = previous.start(1)
        cuts.append((begin, colon.end()))
    if len(cuts) < 3:
        return [line]
    pieces = [line[: cuts[0][0]].rstrip()]
    segments = []
    for number, (begin, colon_end) in enumerate(cuts):
        stop = cuts[number + 1][0] if number + 1 < len(cuts) else len(line)
        segments.append([line[begin : colon_end - 1].strip(), line[colon_end:stop].strip()])
    merged: list[list[str]] = []
    for label, value in segments:
        if merged and not merged[-1][1]:
            merged[-1][1] = f"{label}: {value}"  # "Subject: RE: …": the value begins with a label
        else:
            merged.append([label, value])
    if not sum(bool(_ADDRESS.search(value)) for _, value in merged):
        return [line]
    return [p for p in pieces if p] + [f"{label}: {value}" for label, value in merged]


def _lines(text: str) -> list[str]:
    return [part for line in text.replace("\r\n", "\n").split("\n") for part in _unsqueeze(line)]


def _forward_block(lines: list[str], start: int) -> tuple[dict[str, str], int, bool] | None:
    run = _run(lines, start)
    if run is None:
        return None
    picked = run.pick()
    return (picked, run.end, run.after_separator) if picked else None


# A line that introduces quoted earlier mail: it ends in a colon and names an address or a date
# ("On Mon, 16 Nov 2026 at 14:12, A <a@x> wrote:", "Am 16.11.2026 um 14:12 schrieb A:").
def _quote_intro(line: str) -> bool:
    bare = line.strip()
    return (
        len(bare) < 250
        and bare.endswith((":", "："))
        and (bool(_ADDRESS.search(bare)) or (_is_date(bare) and bool(re.search(r"\d[:.]\d\d", bare))))
    )


def own_text(lines: list[str]) -> str:
    """The forwarded message's words: up to where it quotes earlier mail or its signature begins."""
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.lstrip().startswith(">") or line.rstrip() == "--" or line == "-- ":
            break
        if _SEPARATOR.match(line) and index > 0 and kept and _run(lines, index + 1) is not None:
            break  # "-----Original Message-----" over an older message's header block
        if _quote_intro(line):
            break
        if _labelled(line) is not None and _forward_block(lines, index) is not None:
            break  # an older message in the thread, with its own header block
        kept.append(line)
    return "\n".join(kept).strip()


def find_inline(text: str) -> Forwarded | None:
    """The first forward block in a message's text, or None when it holds none."""
    lines = _lines(text)
    for index, line in enumerate(lines):
        if _labelled(line) is None:
            continue
        block = _forward_block(lines, index)
        if block is None:
            continue
        fields, after, after_separator = block
        name, addr = _author(fields["from"])
        body = [re.sub(r"^\s*>\s?", "", line) for line in lines[after:]]
        return Forwarded(
            author_name=name,
            author_addr=addr,
            date=parse_date(fields["date"]) if fields["date"] else None,
            subject=fields["subject"] or None,
            to=fields["to"] or None,
            text=own_text(body),
            after_separator=after_separator,
        )
    return None


def find_attached(message: Message) -> Forwarded | None:
    """The first message/rfc822 part: a forward as attachment carries real headers."""
    for part in message.walk():
        if content_type(part) != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            continue
        author = getaddresses([str(inner.get("From", ""))])
        name, addr = author[0] if author else ("", "")
        return Forwarded(
            author_name=name or None,
            author_addr=addr.lower() or None,
            date=parse_date(str(inner.get("Date", ""))),
            subject=str(inner.get("Subject", "")) or None,
            to=str(inner.get("To", "")) or None,
            text=own_text(body_text(inner).split("\n")),
            attached=True,
        )
    return None


def body_text(message: Message) -> str:
    """The readable text of a message: its plain part, or its HTML part reduced to text."""
    plain = html = None
    for part in message.walk():
        if content_type(part) == "message/rfc822" and part is not message:
            break
        if part.get_content_disposition() == "attachment":
            continue
        if content_type(part) == "text/plain" and plain is None:
            plain = _decoded(part)
        elif content_type(part) == "text/html" and html is None:
            html = _decoded(part)
    if plain is not None and plain.strip():
        return plain[:READ_LIMIT].replace("\r\n", "\n")
    if html:
        # Markup is most of an HTML part: twice the limit still holds as many words.
        return html_to_text(html[: 2 * READ_LIMIT])
    return ""


def _decoded(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, AttributeError, ValueError, AssertionError):
        # An unknown or wrong charset: keep what can be read rather than nothing.
        data = part.get_payload(decode=True) or b""
        content = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return content if isinstance(content, str) else ""


_HIDDEN_OPEN = re.compile(r"(?i)<(script|style|head)\b")


def _without_hidden(html: str) -> str:
    """`html` with each script, style and head element (and what it holds) replaced by a space.

    `<(script|style|head)\\b.*?</\\1>` as one pattern searches to the end of the text from
    every opening tag that is never closed: a message of `<script ` repeated took minutes.
    Here each closing tag is looked for once, and a name found unclosed is not looked for again.
    """
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()
    for opening in _HIDDEN_OPEN.finditer(html):
        name = opening.group(1).lower()
        if opening.start() < pos or name in unclosed:
            continue
        closing = re.compile(f"</{name}>", re.I).search(html, opening.end())
        if closing is None:
            unclosed.add(name)
            continue
        out += [html[pos : opening.start()], " "]
        pos = closing.end()
    out.append(html[pos:])
    return "".join(out)


def html_to_text(html: str) -> str:
    """Enough of an HTML body's text for matching and for staff to read."""
    from html import unescape

    text = _without_hidden(html)
    text = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h\d|blockquote)>", "\n", text)
    text = strip_tags(text)
    text = unescape(text).replace("\xa0", " ")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
