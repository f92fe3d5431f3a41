"""Forwards as members' mail clients make them, in many languages, for the forward tests.

Each client's layout is written here from how the client is documented or seen to
lay out a forward (its separator, the order of its header lines, how it writes the
author and the date); the labels are each language's own words for From, Sent, To,
Subject. The employer's reply inside is English (the union's members are in the UK,
whatever language their mail client speaks).

`build_forward(...)` returns the raw bytes of one message to organising@, and what
reading it must find (the author's address, the reply's own words).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from html import escape

# The words each language's clients use. sent: Outlook's "Sent"; date: Gmail's and Thunderbird's
# "Date"; gmail/outlook/apple/thunderbird: the line that opens a forward; fwd: the subject prefix.
# fmt: off
LANGUAGES: dict[str, dict[str, str]] = {
    "en": dict(from_="From", to="To", cc="Cc", sent="Sent", date="Date", subject="Subject",
               gmail="Forwarded message", outlook="Original Message",
               apple="Begin forwarded message:", thunderbird="Forwarded Message", fwd="Fwd"),
    "de": dict(from_="Von", to="An", cc="Cc", sent="Gesendet", date="Datum", subject="Betreff",
               gmail="Weitergeleitete Nachricht", outlook="Ursprüngliche Nachricht",
               apple="Anfang der weitergeleiteten Nachricht:", thunderbird="Weitergeleitete Nachricht",
               fwd="WG"),
    "fr": dict(from_="De", to="À", cc="Cc", sent="Envoyé", date="Date", subject="Objet",
               gmail="Message transféré", outlook="Message d'origine",
               apple="Début du message réexpédié :", thunderbird="Message transféré", fwd="TR"),
    "es": dict(from_="De", to="Para", cc="CC", sent="Enviado", date="Fecha", subject="Asunto",
               gmail="Mensaje reenviado", outlook="Mensaje original",
               apple="Inicio del mensaje reenviado:", thunderbird="Mensaje reenviado", fwd="RV"),
    "it": dict(from_="Da", to="A", cc="Cc", sent="Inviato", date="Data", subject="Oggetto",
               gmail="Messaggio inoltrato", outlook="Messaggio originale",
               apple="Inizio messaggio inoltrato:", thunderbird="Messaggio inoltrato", fwd="I"),
    "nl": dict(from_="Van", to="Aan", cc="CC", sent="Verzonden", date="Datum", subject="Onderwerp",
               gmail="Doorgestuurd bericht", outlook="Oorspronkelijk bericht",
               apple="Begin doorgestuurd bericht:", thunderbird="Doorgestuurd bericht", fwd="Doorst"),
    "pt": dict(from_="De", to="Para", cc="Cc", sent="Enviado", date="Data", subject="Assunto",
               gmail="Mensagem encaminhada", outlook="Mensagem original",
               apple="Início da mensagem reencaminhada:", thunderbird="Mensagem encaminhada", fwd="Enc"),
    "pl": dict(from_="Od", to="Do", cc="DW", sent="Wysłane", date="Data", subject="Temat",
               gmail="Wiadomość przekazana dalej", outlook="Wiadomość oryginalna",
               apple="Początek przekazywanej wiadomości:", thunderbird="Przekazana wiadomość", fwd="PD"),
    "cs": dict(from_="Od", to="Komu", cc="Kopie", sent="Odesláno", date="Datum", subject="Předmět",
               gmail="Přeposlaná zpráva", outlook="Původní zpráva",
               apple="Začátek přeposílané zprávy:", thunderbird="Přeposlaná zpráva", fwd="Fwd"),
    "sk": dict(from_="Od", to="Komu", cc="Kópia", sent="Odoslané", date="Dátum", subject="Predmet",
               gmail="Preposlaná správa", outlook="Pôvodná správa",
               apple="Začiatok preposlanej správy:", thunderbird="Preposlaná správa", fwd="FW"),
    "hr": dict(from_="Od", to="Za", cc="Kopija", sent="Poslano", date="Datum", subject="Predmet",
               gmail="Proslijeđena poruka", outlook="Izvorna poruka",
               apple="Početak proslijeđene poruke:", thunderbird="Proslijeđena poruka", fwd="Fwd"),
    "ro": dict(from_="De la", to="Către", cc="Cc", sent="Trimis", date="Dată", subject="Subiect",
               gmail="Mesaj redirecționat", outlook="Mesaj original",
               apple="Începutul mesajului redirecționat:", thunderbird="Mesaj redirecționat", fwd="Fwd"),
    "hu": dict(from_="Feladó", to="Címzett", cc="Másolatot kap", sent="Elküldve", date="Dátum",
               subject="Tárgy", gmail="Továbbított üzenet", outlook="Eredeti üzenet",
               apple="Továbbított üzenet kezdete:", thunderbird="Továbbított üzenet", fwd="Fw"),
    "da": dict(from_="Fra", to="Til", cc="Cc", sent="Sendt", date="Dato", subject="Emne",
               gmail="Videresendt meddelelse", outlook="Oprindelig meddelelse",
               apple="Start på videresendt besked:", thunderbird="Videresendt meddelelse", fwd="VS"),
    "no": dict(from_="Fra", to="Til", cc="Kopi", sent="Sendt", date="Dato", subject="Emne",
               gmail="Videresendt melding", outlook="Opprinnelig melding",
               apple="Start på videresendt melding:", thunderbird="Videresendt melding", fwd="VS"),
    "sv": dict(from_="Från", to="Till", cc="Kopia", sent="Skickat", date="Datum", subject="Ämne",
               gmail="Vidarebefordrat meddelande", outlook="Ursprungligt meddelande",
               apple="Vidarebefordrat brev:", thunderbird="Vidarebefordrat meddelande", fwd="VB"),
    "fi": dict(from_="Lähettäjä", to="Vastaanottaja", cc="Kopio", sent="Lähetetty",
               date="Päivämäärä", subject="Aihe", gmail="Välitetty viesti", outlook="Alkuperäinen viesti",
               apple="Välitetty viesti alkaa:", thunderbird="Välitetty viesti", fwd="VL"),
    "et": dict(from_="Saatja", to="Adressaat", cc="Koopia", sent="Saadetud", date="Kuupäev",
               subject="Teema", gmail="Edastatud kiri", outlook="Algne kiri",
               apple="Edastatud kirja algus:", thunderbird="Edastatud kiri", fwd="Edasi"),
    "tr": dict(from_="Kimden", to="Kime", cc="Bilgi", sent="Gönderildi", date="Tarih", subject="Konu",
               gmail="İletilen ileti", outlook="Özgün İleti",
               apple="İletilen ileti başlangıcı:", thunderbird="İletilen ileti", fwd="İLT"),
    "ru": dict(from_="От", to="Кому", cc="Копия", sent="Отправлено", date="Дата", subject="Тема",
               gmail="Пересылаемое сообщение", outlook="Исходное сообщение",
               apple="Начало переадресованного сообщения:", thunderbird="Пересылаемое сообщение",
               fwd="Пересл"),
    "uk": dict(from_="Від", to="Кому", cc="Копія", sent="Надіслано", date="Дата", subject="Тема",
               gmail="Переслане повідомлення", outlook="Оригінальне повідомлення",
               apple="Початок пересланого повідомлення:", thunderbird="Переслане повідомлення",
               fwd="Пересл"),
    "el": dict(from_="Από", to="Προς", cc="Κοιν.", sent="Στάλθηκε", date="Ημερομηνία", subject="Θέμα",
               gmail="Προωθημένο μήνυμα", outlook="Αρχικό μήνυμα",
               apple="Αρχή προωθημένου μηνύματος:", thunderbird="Προωθημένο μήνυμα", fwd="ΠΡΘ"),
    "ja": dict(from_="差出人", to="宛先", cc="CC", sent="送信日時", date="日付", subject="件名",
               gmail="転送されたメッセージ", outlook="元のメッセージ",
               apple="転送されたメッセージ:", thunderbird="転送されたメッセージ", fwd="転送"),
    "zh": dict(from_="发件人", to="收件人", cc="抄送", sent="发送时间", date="日期", subject="主题",
               gmail="转发的邮件", outlook="原始邮件",
               apple="以下为转发的邮件：", thunderbird="转发的消息", fwd="转发"),
    "ko": dict(from_="보낸 사람", to="받는 사람", cc="참조", sent="보낸 날짜", date="날짜", subject="제목",
               gmail="전달된 메일", outlook="원본 메시지",
               apple="전달된 메일:", thunderbird="전달된 메시지", fwd="FW"),
    "cy": dict(from_="Oddi wrth", to="At", cc="Cc", sent="Anfonwyd", date="Dyddiad", subject="Pwnc",
               gmail="Neges wedi'i hanfon ymlaen", outlook="Neges Wreiddiol",
               apple="Dechrau'r neges a anfonwyd ymlaen:", thunderbird="Neges wedi'i hanfon ymlaen",
               fwd="Ymlaen"),
}
# fmt: on
NORDIC = ("da", "no", "sv", "fi", "et")
SLAVIC = ("pl", "cs", "sk", "hr", "ru", "uk")
CLIENTS = (
    "gmail",
    "outlook_desktop",
    "outlook_web",
    "new_outlook",
    "apple_mail",
    "thunderbird",
    "yahoo_plain",
    "yahoo_html",
)

# How a client in each language writes the moment of the reply (16 November 2026, 14:12 London).
_NUMERIC_DATES = {
    "de": "16.11.2026 14:12", "pl": "16.11.2026 14:12", "cs": "16.11.2026 14:12",
    "sk": "16.11.2026 14:12", "hr": "16.11.2026. 14:12", "ro": "16.11.2026 14:12",
    "da": "16.11.2026 14.12", "no": "16.11.2026 14:12", "fi": "16.11.2026 klo 14.12",
    "et": "16.11.2026 14:12", "tr": "16.11.2026 14:12", "ru": "16.11.2026 14:12",
    "uk": "16.11.2026 14:12", "el": "16/11/2026 14:12", "fr": "16/11/2026 14:12",
    "es": "16/11/2026 14:12", "it": "16/11/2026 14:12", "pt": "16/11/2026 14:12",
    "nl": "16-11-2026 14:12", "sv": "2026-11-16 14:12", "hu": "2026. 11. 16. 14:12",
    "ja": "2026年11月16日 14:12", "zh": "2026年11月16日 14:12", "ko": "2026년 11월 16일 오후 2:12",
    "cy": "16/11/2026 14:12", "en": "16 November 2026 14:12",
}  # fmt: skip
_ENGLISH_DATES = {
    "gmail": "Mon, 16 Nov 2026 at 14:12",
    "outlook_desktop": "Monday, November 16, 2026 2:12 PM",
    "outlook_web": "Monday, 16 November 2026 14:12",
    "new_outlook": "Monday, 16 November 2026 14:12",
    "apple_mail": "16 November 2026 at 14:12:09 GMT",
    "thunderbird": "Mon, 16 Nov 2026 14:12:09 +0000",
    "yahoo_plain": "Monday, 16 November 2026, 14:12:09 GMT",
    "yahoo_html": "Monday, 16 November 2026, 14:12:09 GMT",
}
REPLY_MOMENT = datetime(2026, 11, 16, 14, 12, tzinfo=UTC)


@dataclass
class Reply:
    """What the employer wrote back."""

    author_name: str
    author_addr: str
    subject: str
    text: str


@dataclass
class Built:
    raw: bytes
    client: str
    language: str
    reply: Reply
    with_reference: bool


def _date(client: str, language: str) -> str:
    if language == "en":
        return _ENGLISH_DATES[client]
    if client == "thunderbird":
        return _ENGLISH_DATES["thunderbird"]  # Thunderbird keeps the RFC 5322 date of the original
    return _NUMERIC_DATES[language]


def _colon(language: str, client: str) -> str:
    # French clients put a space before the colon; Japanese and Chinese Outlook a full-width one.
    if language == "fr" and client in ("outlook_desktop", "outlook_web", "apple_mail"):
        return " :"
    if language in ("ja", "zh") and client in ("outlook_desktop", "new_outlook"):
        return "："
    return ":"


def header_lines(
    client: str, language: str, reply: Reply, member_name: str, member_addr: str
) -> list[tuple[str, str]]:
    """The forward block's (label, value) lines, in the client's order."""
    words = LANGUAGES[language]
    author = f"{reply.author_name} <{reply.author_addr}>"
    member = f"{member_name} <{member_addr}>"
    when = _date(client, language)
    if client == "gmail":
        return [(words["from_"], author), (words["date"], when), (words["subject"], reply.subject),
                (words["to"], member)]  # fmt: skip
    if client == "outlook_desktop":
        return [(words["from_"], f"{reply.author_name} [mailto:{reply.author_addr}]"),
                (words["sent"], when), (words["to"], member), (words["subject"], reply.subject)]  # fmt: skip
    if client in ("outlook_web", "new_outlook"):
        return [(words["from_"], author), (words["sent"], when), (words["to"], member),
                (words["subject"], reply.subject)]  # fmt: skip
    if client == "apple_mail":
        return [(words["from_"], author), (words["subject"], reply.subject), (words["date"], when),
                (words["to"], member)]  # fmt: skip
    if client == "thunderbird":
        return [(words["subject"], reply.subject), (words["date"], when), (words["from_"], author),
                (words["to"], member)]  # fmt: skip
    # Yahoo
    return [(words["from_"], author), (words["to"], member), (words["sent"], when),
            (words["subject"], reply.subject)]  # fmt: skip


def forward_text(
    client: str, language: str, reply: Reply, member_name: str, member_addr: str, note: str
) -> str:
    """The plain-text body a client writes for a forward (for HTML-only clients, the HTML)."""
    words = LANGUAGES[language]
    colon = _colon(language, client)
    lines = header_lines(client, language, reply, member_name, member_addr)
    if client == "gmail":
        block = [f"---------- {words['gmail']} ---------"] + [f"{k}{colon} {v}" for k, v in lines]
        return f"{note}\n\n" + "\n".join(block) + f"\n\n\n{reply.text}\n"
    if client == "outlook_desktop":
        block = [f"-----{words['outlook']}-----"] + [f"{k}{colon} {v}" for k, v in lines]
        return f"{note}\n\n" + "\n".join(block) + f"\n\n{reply.text}\n"
    if client == "outlook_web":
        # A rule, then each header line followed by a blank one.
        block = ["_" * 32, ""] + [line for k, v in lines for line in (f"{k}{colon} {v}", "")]
        return f"{note}\n\n" + "\n".join(block) + f"\n{reply.text}\n"
    if client == "apple_mail":
        block = [words["apple"], ""] + [f"{k}{colon} {v}" for k, v in lines]
        return f"{note}\n\n" + "\n".join(block) + f"\n\n{reply.text}\n"
    if client == "thunderbird":
        # Thunderbird aligns the values with a tab after the label.
        block = [f"-------- {words['thunderbird']} --------"] + [f"{k}{colon}\t{v}" for k, v in lines]
        return f"{note}\n\n" + "\n".join(block) + f"\n\n\n{reply.text}\n"
    if client == "yahoo_plain":
        # Yahoo's plain part runs the whole header block into the separator's line, with no
        # space between one value and the next label.
        squeezed = "".join(f"{k}{colon} {v}" for k, v in lines)
        return f"{note}\n\n\n   ----- {words['gmail'] if language != 'en' else 'Forwarded Message'} ----- {squeezed}\n\n{reply.text}\n"
    raise ValueError(client)


def forward_html(
    client: str, language: str, reply: Reply, member_name: str, member_addr: str, note: str
) -> str:
    words = LANGUAGES[language]
    colon = _colon(language, client)
    lines = header_lines(client, language, reply, member_name, member_addr)
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in reply.text.split("\n\n"))
    if client == "new_outlook":
        heads = "<br>".join(f"<b>{escape(k)}{colon}</b> {escape(v)}" for k, v in lines)
        return (
            f'<html><body><div dir="ltr">{escape(note)}</div><div><br></div>'
            f'<hr style="display:inline-block;width:98%" tabindex="-1">'
            f'<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt">{heads}</font>'
            f"<div>&nbsp;</div></div><div>{paragraphs}</div></body></html>"
        )
    if client == "yahoo_html":
        heads = "".join(f"<div><b>{escape(k)}{colon}</b> {escape(v)}</div>" for k, v in lines)
        return (
            f'<html><body><div class="ydp-body">{escape(note)}</div><br>'
            f'<div id="yahoo_quoted_fwd" class="yahoo_quoted">'
            f'<div style="font-family:Helvetica,Arial,sans-serif;font-size:13px">'
            f"<div>----- {escape(words['gmail'])} -----</div>{heads}<div><br></div>"
            f"<div>{paragraphs}</div></div></div></body></html>"
        )
    raise ValueError(client)


def build_forward(
    client: str,
    language: str,
    reply: Reply,
    member_name: str,
    member_addr: str,
    *,
    note: str = "Please see the reply below.",
    reference: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
    organising: str = "organising@union.example",
) -> Built:
    """One forward of `reply` by the member, as `client` in `language` sends it."""
    words = LANGUAGES[language]
    message = EmailMessage()
    message["From"] = formataddr((member_name, member_addr))
    message["To"] = organising
    message["Date"] = format_datetime(datetime(2026, 11, 18, 9, 30, tzinfo=UTC))
    message["Message-ID"] = make_msgid(domain="mail.members.example.org")
    subject = f"{words['fwd']}: {reply.subject}"
    if reference:
        subject += f" [{reference}]"
    message["Subject"] = subject
    if client in ("new_outlook", "yahoo_html"):
        html = forward_html(client, language, reply, member_name, member_addr, note)
        if client == "yahoo_html":
            plain = forward_text("yahoo_plain", language, reply, member_name, member_addr, note)
            message.set_content(plain)
            message.add_alternative(html, subtype="html")
        else:
            message.set_content(html, subtype="html")
    else:
        message.set_content(forward_text(client, language, reply, member_name, member_addr, note))
    if attachment is not None:
        filename, mime, data = attachment
        maintype, subtype = mime.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return Built(
        raw=message.as_bytes(), client=client, language=language, reply=reply, with_reference=bool(reference)
    )


def mixed_set(count: int, seed: int = 13) -> list[tuple[str, str]]:
    """(client, language) pairs covering every client and language, shuffled reproducibly."""
    rng = random.Random(seed)
    pairs = [(c, lang) for c in CLIENTS for lang in LANGUAGES]
    rng.shuffle(pairs)
    while len(pairs) < count:
        pairs.append((rng.choice(CLIENTS), rng.choice(list(LANGUAGES))))
    return pairs[:count]
