"""Campaign templates: a sandboxed Jinja2 environment, field checking, and CSS inlined once.

Templates are written by organisers, so they render in Jinja2's sandbox
with StrictUndefined: a misspelt field is an error naming the file and
line, never a blank in 10,000 letters. HTML templates have their
stylesheet inlined once per wave, on the template source, with the Jinja2
tags protected by placeholders while premailer works.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from premailer import Premailer

from engine.errors import CampaignError

# Every field a template may use, by what it is merged for. Custom member
# fields (any extra column of the membership export) are member.custom.<name>.
MEMBER_FIELDS = (
    "membership_no",
    "first_name",
    "last_name",
    "name",
    "email",
    "address_line1",
    "address_line2",
    "address_line3",
    "town",
    "postcode",
    "address",
    "school",
    "school_urn",
    "role",
    "branch",
    "region",
    "constituency",
)
TARGET_FIELDS = ("name", "salutation", "address", "email", "kind", "constituency", "party")
# meeting_date: the wave's --meeting-date as "14 January 2027" (blank without one).
WAVE_FIELDS = ("name", "reply_days", "asks", "meeting_date", "question")
# officials: the names of every member who shares the letter (a --one-per-target wave's lead first,
# else the member alone), as "A, B and C"; co_signatories: the same without the lead (blank if none).
LETTER_FIELDS = ("reference", "date", "officials", "co_signatories")
# sent_*: the letter as its target received it, set in the member's receipt (blank before it goes);
# sent_attachments: the files that went with it, each as "name (PDF, 120 KB)".
EMAIL_LETTER_FIELDS = (
    *LETTER_FIELDS, "subject", "text", "sent_subject", "sent_text", "sent_on", "sent_attachments",
)  # fmt: skip
CAMPAIGN_FIELDS = ("name", "organising_email", "sender_name", "footer", "logo_url")
TOP_LEVEL = ("member", "target", "wave", "letter", "link", "campaign", "unsubscribe_link")
# Member fields a template may need that a member can lack.
OPTIONAL_MEMBER_FIELDS = (
    "address_line1",
    "address_line2",
    "address_line3",
    "town",
    "address",
    "role",
    "branch",
    "region",
    "school",
    "school_urn",  # empty for supply, central and retired staff
)


# What a follow-up letter knows of the reply it answers (outcome: as staff coded it, else as suggested),
# and what the MP questionnaire links to.
REPLY_FIELDS = ("author", "date", "excerpt", "text", "outcome")
ANSWER_FIELDS = ("yes", "not_yet", "no")


def known_fields(kind: str) -> set[str]:
    """Dotted field names valid in a template of `kind`: 'letter', 'email', 'layout',
    'follow_up' (a letter that may quote the reply) or 'questionnaire' (an email with answer links)."""
    if kind == "follow_up":
        return known_fields("letter") | {f"reply.{name}" for name in REPLY_FIELDS}
    if kind == "questionnaire":
        return known_fields("email") | {f"answers.{name}" for name in ANSWER_FIELDS} | {"reminder"}
    if kind == "layout":
        # reference_in_text: the letter quotes its own reference, so the layout need not print it.
        fields = {"body", "letter.subject", "letter.reference_in_text"}
        fields.update(f"letter.{name}" for name in LETTER_FIELDS)
        fields.update(f"member.{name}" for name in MEMBER_FIELDS)
        fields.update(f"target.{name}" for name in TARGET_FIELDS)
        return fields
    letter = LETTER_FIELDS if kind == "letter" else EMAIL_LETTER_FIELDS
    fields = {"link", "unsubscribe_link"} if kind == "email" else {"link"}
    for prefix, names in (
        ("member", MEMBER_FIELDS),
        ("target", TARGET_FIELDS),
        ("wave", WAVE_FIELDS),
        ("letter", letter),
        ("campaign", CAMPAIGN_FIELDS),
    ):
        fields.update(f"{prefix}.{name}" for name in names)
    return fields


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


@cache
def environment(html: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        finalize=_blank_none,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def compile_template(source: str, filename: str, *, html: bool) -> Template:
    """Compile once; syntax errors come back as `FILE:LINE: message`."""
    env = environment(html)
    try:
        code = env.compile(source, name=filename, filename=filename)
    except TemplateSyntaxError as exc:
        raise CampaignError(f"{filename}:{exc.lineno}: {exc.message}") from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def render_error(exc: Exception, filename: str, template: Template | None = None) -> CampaignError:
    """A rendering error as `FILE:LINE: problem`.

    After Template.render, Jinja has rewritten the traceback to template
    lines; a block called directly leaves the compiled code's line, which
    `template` maps back.
    """
    line = _template_line(exc.__traceback__, filename)
    if line is not None and template is not None:
        line = template.get_corresponding_lineno(line)
    where = f"{filename}:{line}" if line else filename
    if isinstance(exc, SecurityError):
        return CampaignError(f"{where}: not allowed in a template: {exc}")
    if isinstance(exc, UndefinedError):
        return CampaignError(f"{where}: {exc.message}")
    return CampaignError(f"{where}: {type(exc).__name__}: {exc}")


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@dataclass
class FieldUse:
    field: str
    line: int


def fields_used(source: str, filename: str, *, html: bool = False) -> list[FieldUse]:
    """Every merge field the template reads, as dotted names with the line of first use."""
    env = environment(html)
    try:
        tree = env.parse(source, name=filename, filename=filename)
    except TemplateSyntaxError as exc:
        raise CampaignError(f"{filename}:{exc.lineno}: {exc.message}") from None
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    seen: dict[str, int] = {}
    for node in _outermost_lookups(tree):
        path = _dotted(node)
        if path is None or path.split(".")[0] in local:
            continue
        seen.setdefault(path, node.lineno)
    return [FieldUse(f, line) for f, line in sorted(seen.items(), key=lambda item: (item[1], item[0]))]


def _outermost_lookups(tree: nodes.Node) -> Iterator[nodes.Node]:
    """Name/Getattr/Getitem chains, outermost only (member.custom.x, not member.custom too)."""

    def walk(node: nodes.Node) -> Iterator[nodes.Node]:
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            # A method call (member.role.upper()): the field is what the method is called on.
            yield from walk(node.node.node)
            for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
                if child is not None:
                    yield from walk(child)
            return
        if isinstance(node, (nodes.Getattr, nodes.Getitem)) and _dotted(node) is not None:
            yield node
            return
        if isinstance(node, nodes.Name) and node.ctx == "load":
            yield node
            return
        for child in node.iter_child_nodes():
            yield from walk(child)

    yield from walk(tree)


def _dotted(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        inner = _dotted(node.node)
        return None if inner is None else f"{inner}.{node.attr}"
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        inner = _dotted(node.node)
        return None if inner is None else f"{inner}.{node.arg.value}"
    return None


def unknown_fields(uses: list[FieldUse], kind: str, filename: str) -> list[str]:
    """`FILE:LINE: unknown field X` for every field the template may not use."""
    known = known_fields(kind)
    problems = []
    for use in uses:
        if use.field in known or use.field.startswith("member.custom."):
            continue
        if any(part.startswith("_") for part in use.field.split(".")):
            problems.append(f"{filename}:{use.line}: {use.field}: not allowed in a template")
            continue
        hint = ""
        top = use.field.split(".")[0]
        if top in TOP_LEVEL and use.field != top:
            names = sorted(f.split(".", 1)[1] for f in known if f.startswith(top + "."))
            hint = f" ({top} has: {', '.join(names)})"
        elif top in TOP_LEVEL:
            hint = (
                f" (use a field of {top}, such as {top}.name)"
                if top not in ("link", "unsubscribe_link")
                else ""
            )
        problems.append(f"{filename}:{use.line}: unknown field {use.field}{hint}")
    return problems


# ---- CSS inlining -----------------------------------------------------------

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def inline_css(html_source: str, filename: str) -> str:
    """Inline the <style> rules of an HTML template into style attributes, once.

    Jinja2 tags are swapped for inert placeholders first (premailer would
    otherwise mangle them inside attributes), then put back.
    """
    tags: list[str] = []

    def protect(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return f"JINJATAG{len(tags) - 1:05d}X"

    protected = _JINJA_TAG.sub(protect, html_source)
    try:
        inlined = Premailer(
            protected,
            keep_style_tags=False,
            remove_classes=False,
            disable_validation=True,
            allow_network=False,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    except Exception as exc:  # premailer raises many kinds for bad CSS/HTML
        raise CampaignError(f"{filename}: cannot inline its CSS: {exc}") from None
    restored = re.sub(r"JINJATAG(\d{5})X", lambda m: tags[int(m.group(1))], inlined)
    missing = len(tags) - len(re.findall(r"JINJATAG\d{5}X", inlined))
    if missing:
        raise CampaignError(f"{filename}: {missing} template tag(s) were lost inlining its CSS")
    return restored


def read_template(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such template") from None
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not UTF-8 text") from None
