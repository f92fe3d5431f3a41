"""A wave's templates: found, checked and frozen at launch, compiled once, rendered per member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Template, nodes

from engine.errors import CampaignError, RowErrors
from engine.letters.merge import Layout, freeze_layout
from engine.letters.templating import (
    compile_template,
    environment,
    fields_used,
    inline_css,
    read_template,
    render_error,
    unknown_fields,
)
from engine.settings import Settings


def letter_template_path(name: str, settings: Settings) -> Path:
    """A letter template by path, or by name in templates/letters/ ('mp-inspection')."""
    path = Path(name)
    if path.is_file():
        return path
    folder = Path(settings.templates_dir) / "letters"
    candidate = _named_in(folder, name if name.endswith(".txt") else f"{name}.txt", "--letter", name)
    if candidate.is_file():
        return candidate
    raise CampaignError(f"--letter: no template {name!r} (looked for {path} and {candidate})")


def _named_in(folder: Path, filename: str, option: str, name: str) -> Path:
    """`folder/filename`, refused when the name leads out of the folder (`../`, an absolute path).

    A path the organiser types is theirs to choose; a *name* is looked up among the campaign's
    templates, and `../../somewhere/else` must not turn the lookup into reading any file.
    """
    candidate = folder / filename
    if not candidate.resolve().is_relative_to(folder.resolve()):
        raise CampaignError(
            f"{option}: {name!r} leads out of {folder}/: name a template in it, or give the file's path"
        )
    return candidate


def email_template_paths(name: str, settings: Settings) -> tuple[Path, Path]:
    """An email template's plain-text and HTML parts, by path stem or by name in templates/email/."""
    stem = name.removesuffix(".txt").removesuffix(".html")
    text_path, html_path = Path(stem + ".txt"), Path(stem + ".html")
    if text_path.is_file() and html_path.is_file():
        return text_path, html_path
    folder = Path(settings.templates_dir) / "email"
    text_path = _named_in(folder, stem + ".txt", "--invite", name)
    html_path = _named_in(folder, stem + ".html", "--invite", name)
    if text_path.is_file() and html_path.is_file():
        return text_path, html_path
    raise CampaignError(
        f"--invite: no email template {name!r}: it needs both {stem}.txt and {stem}.html "
        f"(here or in {Path(settings.templates_dir) / 'email'})"
    )


def block_names(source: str, filename: str) -> set[str]:
    tree = environment(False).parse(source, name=filename, filename=filename)
    return {block.name for block in tree.find_all(nodes.Block)}


def check_source(source: str, filename: str, kind: str, *, html: bool = False) -> list[str]:
    """Compile a template and return its problems as `FILE:LINE: …` lines (empty when fine)."""
    compile_template(source, filename, html=html)
    problems = unknown_fields(fields_used(source, filename, html=html), kind, filename)
    # The sandbox has no loader, so such a tag would only fail at launch or, worse, in one
    # member's letter; and a template naming `../../secret` must not read files of its choosing.
    tree = environment(html).parse(source, name=filename, filename=filename)
    problems += [
        f"{filename}:{node.lineno}: a template cannot include, extend or import another file"
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))
    ]
    if kind in ("letter", "email", "follow_up", "questionnaire") and not html:
        missing = {"subject", "body"} - block_names(source, filename)
        problems += [f"{filename}:1: needs a {{% block {name} %}}" for name in sorted(missing)]
    return problems


def _custom_fields(*sources: tuple[str, str, bool]) -> list[str]:
    names = set()
    for source, filename, html in sources:
        for use in fields_used(source, filename, html=html):
            if use.field.startswith("member.custom."):
                names.add(use.field.split(".")[2])
    return sorted(names)


PLEDGE_LETTER_FILE = "(pledge question)"
PLEDGE_LETTER = (
    "{% block subject %}{{ wave.question }}{% endblock %}{% block body %}{{ wave.question }}{% endblock %}"
)


def freeze_templates(wave: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Read, check and prepare a wave's templates: the sources as they will be used."""
    pledge = wave.get("target") == "pledge"
    # A pledge wave has no letter: its row's subject and text are the question, so the page,
    # the invitation and every report read it where they read a letter's.
    letter_path = (
        Path(PLEDGE_LETTER_FILE) if pledge else letter_template_path(wave["letter_template"], settings)
    )
    text_path, html_path = email_template_paths(wave["invite_template"], settings)
    receipt_text_path, receipt_html_path = email_template_paths("receipt", settings)
    # A letter kept elsewhere (--letter PATH) gets its own layout.html if it has one, else ours.
    layout_path = letter_path.parent / "layout.html"
    if pledge or not layout_path.is_file():
        layout_path = Path(settings.templates_dir) / "letters" / "layout.html"
    if not layout_path.is_file():
        raise CampaignError(
            f"{layout_path}: the letter layout is missing (it sits in templates/letters/, or beside "
            "a letter given by path)"
        )
    letter = PLEDGE_LETTER if pledge else read_template(letter_path)
    invite_text = read_template(text_path)
    invite_html = read_template(html_path)
    layout = read_template(layout_path)
    problems = check_source(letter, str(letter_path), "letter")
    problems += check_source(invite_text, str(text_path), "email")
    problems += check_source(invite_html, str(html_path), "email", html=True)
    problems += check_source(layout, str(layout_path), "layout", html=True)
    receipt_text = read_template(receipt_text_path)
    receipt_html = read_template(receipt_html_path)
    problems += check_source(receipt_text, str(receipt_text_path), "email")
    problems += check_source(receipt_html, str(receipt_html_path), "email", html=True)
    subject = wave.get("subject")
    if subject:
        problems += check_source(subject, "--subject", "letter")
    if problems:
        raise RowErrors(f"{len(problems)} template problem(s); fix them and try again", problems)
    layout_inlined, paragraph_style = freeze_layout(layout, str(layout_path))
    return {
        **freeze_later(wave, settings),
        "letter_file": str(letter_path),
        "letter": letter,
        "subject": subject,
        "invite_text_file": str(text_path),
        "invite_text": invite_text,
        "invite_html_file": str(html_path),
        "invite_html": inline_css(invite_html, str(html_path)),
        "receipt_text_file": str(receipt_text_path),
        "receipt_text": receipt_text,
        "receipt_html_file": str(receipt_html_path),
        "receipt_html": inline_css(receipt_html, str(receipt_html_path)),
        # A receipt that carries the letter as sent is the member's copy: the letter then goes
        # without a Cc to them. One that does not (an organiser's own) leaves the Cc as the copy.
        "receipt_carries_letter": any(
            use.field == "letter.sent_text" for use in fields_used(receipt_text, str(receipt_text_path))
        ),
        "layout_file": str(layout_path),
        "layout": layout_inlined,
        "paragraph_style": paragraph_style,
        "custom_fields": _custom_fields(
            (letter, str(letter_path), False),
            (invite_text, str(text_path), False),
            (invite_html, str(html_path), True),
        ),
    }


# Emails a wave may send after launch, by outbox kind: their template names and check kinds.
LATER_EMAILS = {
    "follow_up_invitation": ("follow-up-invitation", "email"),
    "chaser_invitation": ("chaser-invitation", "email"),
    "questionnaire": ("mp-questionnaire", "questionnaire"),
}


def freeze_later(wave: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The templates a wave needs after launch (follow-up, chaser, questionnaire), checked and frozen."""
    letters: dict[str, Any] = {}
    emails: dict[str, Any] = {}
    problems: list[str] = []
    for kind, name in (
        ("follow_up", wave.get("follow_up_template")),
        ("chaser", wave.get("chaser_template")),
    ):
        if not name:
            continue
        path = letter_template_path(name, settings)
        source = read_template(path)
        problems += check_source(source, str(path), "follow_up")
        letters[kind] = {"file": str(path), "source": source}
    for outbox_kind, (name, check_kind) in LATER_EMAILS.items():
        text_path, html_path = email_template_paths(name, settings)
        text, html = read_template(text_path), read_template(html_path)
        problems += check_source(text, str(text_path), check_kind)
        problems += check_source(html, str(html_path), check_kind, html=True)
        emails[outbox_kind] = {
            "text_file": str(text_path),
            "text": text,
            "html_file": str(html_path),
            "html": inline_css(html, str(html_path)),
        }
    if problems:
        raise RowErrors(f"{len(problems)} template problem(s); fix them and try again", problems)
    return {"later_letters": letters, "later_emails": emails}


class WaveRenderer:
    """Compiled templates of one wave; every render error names the template file and line."""

    def __init__(self, frozen: dict[str, Any]):
        self.frozen = frozen
        self.paragraph_style: str = frozen["paragraph_style"]
        self._letter = compile_template(frozen["letter"], frozen["letter_file"], html=False)
        self._subject: Template | None = (
            compile_template(frozen["subject"], "--subject", html=False) if frozen.get("subject") else None
        )
        self._invite_text = compile_template(frozen["invite_text"], frozen["invite_text_file"], html=False)
        self._invite_html = compile_template(frozen["invite_html"], frozen["invite_html_file"], html=True)
        self.layout = Layout(frozen["layout"], frozen["layout_file"])

    @staticmethod
    def _context(template: Template, context: dict[str, Any]) -> Any:
        # new_context copies the environment's globals (a ChainMap) for every call;
        # merging them into a plain dict once per template is several times cheaper.
        base = template.__dict__.get("_plain_globals")
        if base is None:
            base = template.__dict__["_plain_globals"] = dict(template.globals)
        return template.new_context({**base, **context}, shared=True)

    @classmethod
    def _block(cls, template: Template, block: str, context: dict[str, Any], filename: str) -> str:
        try:
            ctx = cls._context(template, context)
            return "".join(template.blocks[block](ctx))
        except Exception as exc:
            raise render_error(exc, filename, template) from None

    def letter(self, context: dict[str, Any]) -> tuple[str, str]:
        """(subject, text) of one member's letter."""
        template = self._letter
        try:
            # One context serves both blocks: building it is a good share of a render.
            ctx = self._context(template, context)
            text = "".join(template.blocks["body"](ctx))
            subject = "" if self._subject is not None else "".join(template.blocks["subject"](ctx))
        except Exception as exc:
            raise render_error(exc, self.frozen["letter_file"], template) from None
        if self._subject is not None:
            try:
                subject = self._subject.render(context)
            except Exception as exc:
                raise render_error(exc, "--subject") from None
        return " ".join(subject.split()), text.strip("\n") + "\n"

    def invitation_subject(self, context: dict[str, Any]) -> str:
        subject = self._block(self._invite_text, "subject", context, self.frozen["invite_text_file"])
        return " ".join(subject.split())

    def invitation(self, context: dict[str, Any]) -> tuple[str, str]:
        """(text, html) of one member's invitation."""
        text = self._block(self._invite_text, "body", context, self.frozen["invite_text_file"])
        try:
            html = self._invite_html.render(context)
        except Exception as exc:
            raise render_error(exc, self.frozen["invite_html_file"]) from None
        return text.strip("\n") + "\n", html

    def receipt(self, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) of the receipt a member gets once their letter has gone."""
        frozen = self.frozen
        if not hasattr(self, "_receipt_text"):
            self._receipt_text = compile_template(
                frozen["receipt_text"], frozen["receipt_text_file"], html=False
            )
            self._receipt_html = compile_template(
                frozen["receipt_html"], frozen["receipt_html_file"], html=True
            )
        subject = self._block(self._receipt_text, "subject", context, frozen["receipt_text_file"])
        text = self._block(self._receipt_text, "body", context, frozen["receipt_text_file"])
        try:
            html = self._receipt_html.render(context)
        except Exception as exc:
            raise render_error(exc, frozen["receipt_html_file"]) from None
        return " ".join(subject.split()), text.strip("\n") + "\n", html

    def later_letter(self, kind: str, context: dict[str, Any]) -> tuple[str, str]:
        """(subject, text) of a follow-up or chaser drafted after launch."""
        frozen = (self.frozen.get("later_letters") or {}).get(kind)
        if frozen is None:
            raise CampaignError(f"wave has no {kind.replace('_', '-')} letter template")
        template = self._compiled(f"letter:{kind}", frozen["source"], frozen["file"], html=False)
        subject = self._block(template, "subject", context, frozen["file"])
        text = self._block(template, "body", context, frozen["file"])
        return " ".join(subject.split()), text.strip("\n") + "\n"

    def later_email(self, kind: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) of an email sent after launch, by outbox kind."""
        # The reminder is the questionnaire again, told it is a reminder.
        template_kind = "questionnaire" if kind == "questionnaire_reminder" else kind
        frozen = (self.frozen.get("later_emails") or {}).get(template_kind)
        if frozen is None:
            raise CampaignError(f"the wave's frozen templates have no {kind} email")
        text_template = self._compiled(f"text:{kind}", frozen["text"], frozen["text_file"], html=False)
        html_template = self._compiled(f"html:{kind}", frozen["html"], frozen["html_file"], html=True)
        subject = self._block(text_template, "subject", context, frozen["text_file"])
        text = self._block(text_template, "body", context, frozen["text_file"])
        try:
            html = html_template.render(context)
        except Exception as exc:
            raise render_error(exc, frozen["html_file"]) from None
        return " ".join(subject.split()), text.strip("\n") + "\n", html

    def _compiled(self, key: str, source: str, filename: str, *, html: bool) -> Template:
        cache = self.__dict__.setdefault("_later", {})
        if key not in cache:
            cache[key] = compile_template(source, filename, html=html)
        return cache[key]
