"""The template sandbox, field checking and CSS inlining."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from engine.errors import CampaignError
from engine.letters.render import check_source
from engine.letters.templating import compile_template, fields_used, inline_css, render_error


def render(source: str, html: bool = False, name: str = "t.txt", **context) -> str:
    template = compile_template(source, name, html=html)
    try:
        return template.render(**context)
    except Exception as exc:
        raise render_error(exc, name) from None


def test_fields_used_are_dotted_with_their_line():
    source = "Dear {{ target.salutation }},\n\n{{ member.custom.years_in_post }} years\n{% for x in [1] %}{{ x }}{% endfor %}\n{{ link }}\n"
    uses = [(u.field, u.line) for u in fields_used(source, "t.txt")]
    assert uses == [("target.salutation", 1), ("member.custom.years_in_post", 3), ("link", 5)]


def test_unknown_field_is_reported_with_file_and_line():
    source = "{% block subject %}Hi{% endblock %}{% block body %}\nDear {{ target.name }},\n{{ member.nickname }}\n{% endblock %}\n"
    assert check_source(source, "letters/x.txt", "letter") == [
        "letters/x.txt:3: unknown field member.nickname (member has: address, address_line1, address_line2, "
        "address_line3, branch, constituency, email, first_name, last_name, membership_no, name, postcode, "
        "region, role, school, school_urn, town)"
    ]


def test_letter_template_needs_subject_and_body_blocks():
    assert check_source("Dear {{ target.name }}", "x.txt", "letter") == [
        "x.txt:1: needs a {% block body %}",
        "x.txt:1: needs a {% block subject %}",
    ]


def test_syntax_error_names_file_and_line():
    with pytest.raises(
        CampaignError, match=r"^x.txt:3: Expected an expression, got 'end of statement block'"
    ):
        compile_template("line one\n{{ member.name }}}\n{% if %}", "x.txt", html=False)


def test_strict_undefined_error_names_the_template_line():
    with pytest.raises(CampaignError) as caught:
        render("Dear {{ member.name }},\n\nYou are {{ member.nickname }}.\n", member={"name": "Ann"})
    assert str(caught.value) == "t.txt:3: 'dict object' has no attribute 'nickname'"


@pytest.mark.parametrize(
    "source",
    [
        "{{ member.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ member.items.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_refuses_attribute_tricks(source):
    with pytest.raises(CampaignError, match=r"^t.txt:1: "):
        render(source, member={"name": "Ann"})


def test_template_check_flags_dunder_access():
    assert check_source(
        "{% block subject %}x{% endblock %}{% block body %}{{ member.__class__ }}{% endblock %}",
        "x.txt",
        "letter",
    ) == ["x.txt:1: member.__class__: not allowed in a template"]


def test_member_supplied_text_is_escaped_in_html_templates():
    out = render(
        "<p>Dear {{ member.first_name }}</p>",
        html=True,
        name="t.html",
        member={"first_name": "<script>alert(1)</script>"},
    )
    assert out == "<p>Dear &lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_none_renders_as_blank_not_the_word_none():
    assert render("[{{ member.role }}]", member={"role": None}) == "[]"


class TextAndLinks(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text: list[str] = []
        self.links: list[str] = []
        self.styles: dict[str, str] = {}
        self.in_style = False

    def handle_endtag(self, tag):
        if tag == "style":
            self.in_style = False

    def handle_starttag(self, tag, attrs):
        self.in_style = tag == "style"
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))
        if attrs.get("class") and attrs.get("style"):
            self.styles[attrs["class"]] = attrs["style"]

    def handle_data(self, data):
        if data.strip() and not self.in_style:
            self.text.append(" ".join(data.split()))


def parse(html: str) -> TextAndLinks:
    parser = TextAndLinks()
    parser.feed(html)
    return parser


SOURCE = """<!DOCTYPE html><html><head><style>
  .button { background: #8a1538; color: #ffffff; }
  p { margin: 0 0 14px 0; }
</style></head><body>
<p>Dear {{ member.first_name }},</p>
{% if member.role %}<p class="role">As {{ member.role }}, your voice counts.</p>{% endif %}
<p><a class="button" href="{{ link }}?from={{ member.membership_no }}">Open your letter</a></p>
{# a comment #}
</body></html>"""


@pytest.mark.parametrize(
    "member",
    [
        {"first_name": "Siân", "role": "Headteacher", "membership_no": "M1"},
        {"first_name": "O'Brien & <Co>", "role": None, "membership_no": "M2"},
    ],
)
def test_css_inlined_once_renders_the_same_as_the_original(member):
    inlined = inline_css(SOURCE, "invitation.html")
    assert "<style" not in inlined
    context = {"member": member, "link": "https://campaign.example/l/abc"}
    original = parse(render(SOURCE, html=True, name="a.html", **context))
    result = parse(render(inlined, html=True, name="b.html", **context))
    assert result.text == original.text
    assert (
        result.links == original.links == [f"https://campaign.example/l/abc?from={member['membership_no']}"]
    )
    assert "background:#8a1538" in result.styles["button"]
