"""Merging: building what templates see, and turning a letter's text into HTML.

Contexts are plain dicts, built once per member. A letter's HTML is its
frozen text, escaped and split into paragraphs, each carrying the paragraph
style the wave's layout computed once when its CSS was inlined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from jinja2 import Template
from markupsafe import Markup, escape

from engine.errors import CampaignError
from engine.letters.templating import MEMBER_FIELDS, compile_template, inline_css, render_error

COMMONS_POSTAL = "House of Commons\nLondon\nSW1A 0AA"


def member_context(
    member: dict[str, Any], school_name: str | None, custom_fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """What templates see as `member`; custom fields the wave uses are always present."""
    lines = [member.get(k) for k in ("address_line1", "address_line2", "address_line3", "town")]
    address = "\n".join(line for line in [*lines, member.get("postcode")] if line)
    custom = {name: "" for name in custom_fields}
    custom.update(member.get("custom") or {})
    return {
        "membership_no": member["membership_no"],
        "first_name": member["first_name"],
        "last_name": member["last_name"],
        "name": f"{member['first_name']} {member['last_name']}",
        "email": member["email"],
        "address_line1": member.get("address_line1"),
        "address_line2": member.get("address_line2"),
        "address_line3": member.get("address_line3"),
        "town": member.get("town"),
        "postcode": member.get("postcode"),
        "address": address,
        "school": school_name,
        "school_urn": member.get("school_urn"),
        "role": member.get("role"),
        "branch": member.get("branch"),
        "region": member.get("region"),
        "constituency": member.get("constituency_name"),
        "custom": custom,
    }


def long_date(day: date | datetime) -> str:
    """A date as a letter writes it: "14 January 2027"."""
    return f"{day.day} {day:%B %Y}"


def wave_context(wave: dict[str, Any]) -> dict[str, Any]:
    """What templates see as `wave`."""
    meeting = wave.get("meeting_date")
    return {
        "name": wave["name"],
        "reply_days": wave["reply_days"],
        "asks": wave.get("asks"),
        "meeting_date": long_date(meeting) if meeting else None,
        "question": wave.get("question"),
    }


def names_list(names: list[str]) -> str:
    """["A", "B", "C"] as "A, B and C"."""
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def sharing_context(snapshot: dict[str, Any]) -> dict[str, str]:
    """letter.officials and letter.co_signatories from a letter's frozen merge."""
    officials = snapshot.get("officials")
    if not officials:
        member = snapshot.get("member") or {}
        name = member.get("name") or ""
        return {"officials": name, "co_signatories": ""}
    names = [official["name"] for official in officials]
    return {"officials": names_list(names), "co_signatories": names_list(names[1:])}


def member_from_snapshot(
    stored: dict[str, Any], custom_fields: tuple[str, ...] | list[str] = ()
) -> dict[str, Any]:
    """A frozen member as templates see it: fields left out as empty come back as blanks."""
    member: dict[str, Any] = dict.fromkeys(MEMBER_FIELDS)
    member.update(stored)
    member["custom"] = {**dict.fromkeys(custom_fields, ""), **(stored.get("custom") or {})}
    return member


def salutation(text: str | None, fallback: str) -> str:
    """The words after "Dear": directories often include the "Dear" itself."""
    if not text:
        return fallback
    return re.sub(r"^\s*dear\s+", "", text, flags=re.I).rstrip(",").strip() or fallback


@dataclass(frozen=True)
class Target:
    kind: str
    key: str | None
    name: str
    email: str | None
    salutation: str
    address: str | None
    constituency: str | None = None
    party: str | None = None

    def context(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "email": self.email,
            "salutation": self.salutation,
            "address": self.address,
            "constituency": self.constituency,
            "party": self.party,
        }


def mp_target(mp: dict[str, Any]) -> Target:
    name = mp["name"]
    return Target(
        kind="mp",
        key=mp["constituency_code"],
        name=name,
        email=mp.get("email"),
        salutation=salutation(mp.get("address_as"), name),
        address=mp.get("postal_address") or COMMONS_POSTAL,
        constituency=mp["constituency_name"],
        party=mp.get("party"),
    )


def employer_target(contact: dict[str, Any]) -> Target:
    return Target(
        kind="employer",
        key=contact["employer_key"],
        name=contact["name"],
        email=contact.get("email"),
        salutation=salutation(contact.get("salutation"), "Sir or Madam"),
        address=contact.get("postal_address"),
    )


def fixed_target(wave: dict[str, Any]) -> Target:
    return Target(
        kind="fixed",
        key=None,
        name=wave["fixed_name"],
        email=wave.get("fixed_email"),
        salutation=salutation(wave.get("fixed_salutation"), wave["fixed_name"]),
        address=wave.get("fixed_address"),
    )


def pledge_target(wave: dict[str, Any]) -> Target:
    """A pledge goes to no one: the member answers the wave's question on their page."""
    return Target(kind="pledge", key=None, name=wave["name"], email=None, salutation="", address=None)


# A template asks for the member's own words with a paragraph in square brackets,
# e.g. "[Why this matters in your school: …]". The page prompts for it; if the
# member leaves it exactly as the template wrote it, it is left out of the letter
# rather than sent as it stands. Anything else in brackets is the member's own
# text (some keep the brackets when they type inside them) and always goes.
_PLACEHOLDER = re.compile(r"^[ \t]*\[[^\[\]\n]+\][ \t]*$", re.M)


def placeholders(text: str) -> list[str]:
    """The bracketed prompt lines in a text, without their brackets."""
    # Browsers post a text box's lines ending in CRLF.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [m.group(0).strip()[1:-1] for m in _PLACEHOLDER.finditer(text)]


def unfilled_prompts(text: str, template_text: str) -> list[str]:
    """The template's own prompts that are still in `text` exactly as the template wrote them."""
    own = set(placeholders(template_text))
    return [prompt for prompt in placeholders(text) if prompt in own]


def without_placeholders(text: str, template_text: str) -> str:
    """`text` without the prompts of `template_text` the member left untouched, each with one
    of the blank lines around it; every other line, bracketed or not, stays as it is."""
    own = {f"[{prompt}]" for prompt in placeholders(template_text)}
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").split("\n")
    kept: list[str] = []
    skip_blank = False
    for line in lines:
        if line.strip() in own:
            # The blank line before it stays; the one after goes, so paragraphs stay one apart.
            skip_blank = not kept or kept[-1].strip() == ""
            continue
        if skip_blank and line.strip() == "":
            skip_blank = False
            continue
        skip_blank = False
        kept.append(line)
    return "\n".join(kept).strip("\n") + "\n"


def letter_words(letter: dict[str, Any]) -> str:
    """A letter's words as they go out (email, PDF, mailto): the member's saved or final text,
    or the draft, without the untouched prompts of the letter's own template."""
    return without_placeholders(letter.get("final_text") or letter["body_text"], letter["body_text"])


def paragraphs_html(text: str, paragraph_style: str = "") -> str:
    """Plain letter text as escaped HTML paragraphs; single newlines become line breaks."""
    opening = f'<p style="{escape(paragraph_style)}">' if paragraph_style else "<p>"
    escaped = str(escape(text.strip()))  # once for the whole text: far cheaper than per line
    return "\n".join(
        opening + block.replace("\n", "<br>\n") + "</p>" for block in _PARAGRAPH_BREAK.split(escaped)
    )


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


# ---- the letter layout -------------------------------------------------------

_BODY_TAG = re.compile(r"\{\{-?\s*body\s*-?\}\}")
_SAMPLE = "LETTERBODYSAMPLE"


def freeze_layout(source: str, filename: str) -> tuple[str, str]:
    """Inline the layout's CSS once; returns (inlined source, paragraph style for letter bodies).

    A sample paragraph stands where the body goes while premailer works, so
    the style the layout gives body paragraphs can be read back and applied
    to every letter's paragraphs without inlining each letter.
    """
    if not _BODY_TAG.search(source):
        raise CampaignError(f"{filename}: the layout must place the letter with {{{{ body }}}}")
    # premailer drops @page rules, which only the PDF needs: set them aside and put them back.
    source, page_rules = _take_page_rules(source)
    with_sample = _BODY_TAG.sub(f"<p>{_SAMPLE}</p>", source, count=1)
    inlined = inline_css(with_sample, filename)
    match = re.search(rf"""<p(?: style=(?:"([^"]*)"|'([^']*)'))?>{_SAMPLE}</p>""", inlined)
    if match is None:
        raise CampaignError(f"{filename}: could not place the letter body after inlining CSS")
    style = (match.group(1) or match.group(2) or "").replace("&quot;", '"')
    inlined = inlined[: match.start()] + "{{ body }}" + inlined[match.end() :]
    if page_rules:
        inlined = inlined.replace("</head>", f"<style>\n{page_rules}\n</style>\n</head>", 1)
    return inlined, style


def _take_page_rules(source: str) -> tuple[str, str]:
    """Remove every `@page { … }` rule (nested margin boxes included); return (rest, rules)."""
    rules = []
    while (start := source.find("@page")) != -1:
        depth, opening = 0, source.find("{", start)
        if opening == -1:
            break
        end = len(source) - 1
        for i in range(opening, len(source)):
            if source[i] == "{":
                depth += 1
            elif source[i] == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        rules.append(source[start : end + 1])
        source = source[:start] + source[end + 1 :]
    return source, "\n".join(rules)


class Layout:
    """A wave's frozen letter layout, compiled once."""

    def __init__(self, source: str, filename: str = "layout.html"):
        self.filename = filename
        self.template: Template = compile_template(source, filename, html=True)

    def render(
        self, letter: dict[str, Any], member: dict[str, Any], target: dict[str, Any], body_html: str
    ) -> str:
        try:
            return self.template.render(letter=letter, member=member, target=target, body=Markup(body_html))
        except Exception as exc:
            raise render_error(exc, self.filename) from None
