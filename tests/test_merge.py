"""Merge contexts and letter HTML."""

from __future__ import annotations

from engine.letters.merge import freeze_layout, member_context, paragraphs_html, salutation


def test_paragraphs_are_escaped_and_styled():
    html = paragraphs_html("Dear <b>Ann</b>,\n\nLine one\nline two & more\n", "margin:0")
    assert html == (
        '<p style="margin:0">Dear &lt;b&gt;Ann&lt;/b&gt;,</p>\n'
        '<p style="margin:0">Line one<br>\nline two &amp; more</p>'
    )


def test_salutation_drops_a_leading_dear():
    assert salutation("Dear Director of Education,", "x") == "Director of Education"
    assert salutation(None, "Sir or Madam") == "Sir or Madam"


def test_member_address_block_and_custom_fields_always_present():
    member = {
        "membership_no": "M1",
        "first_name": "Ann",
        "last_name": "Lee",
        "email": "a@x.example.org",
        "address_line1": "1 High St",
        "address_line2": None,
        "town": "Leeds",
        "postcode": "LS1 1AA",
        "custom": {"years": "3"},
    }
    context = member_context(member, "Leeds High", ("years", "grade"))
    assert context["address"] == "1 High St\nLeeds\nLS1 1AA"
    assert context["custom"] == {"years": "3", "grade": ""}
    assert context["name"] == "Ann Lee"


def test_layout_is_inlined_once_and_keeps_its_page_rules():
    source = """<html><head><style>
@page { size: A4; @bottom-center { content: "Ref: {{ letter.reference }}"; } }
.body p { margin: 0 0 11px 0; }
.who { font-weight: bold; }
</style></head><body><div class="who">{{ member.name }}</div><div class="body">{{ body }}</div></body></html>"""
    inlined, paragraph_style = freeze_layout(source, "layout.html")
    assert paragraph_style == "margin:0 0 11px 0"
    assert "{{ body }}" in inlined
    assert '@bottom-center { content: "Ref: {{ letter.reference }}"; }' in inlined
    assert 'style="font-weight:bold"' in inlined


DRAFT = "Dear Ms Alden,\n\nOpening.\n\n[Why this matters in your school]\n\nClosing.\n"


def test_an_unfilled_prompt_for_the_members_own_words_is_left_out():
    from engine.letters.merge import placeholders, unfilled_prompts, without_placeholders

    assert placeholders(DRAFT) == ["Why this matters in your school"]
    assert unfilled_prompts(DRAFT, DRAFT) == ["Why this matters in your school"]
    assert without_placeholders(DRAFT, DRAFT) == "Dear Ms Alden,\n\nOpening.\n\nClosing.\n"
    filled = DRAFT.replace("[Why this matters in your school]", "Two colleagues left [in May].")
    assert unfilled_prompts(filled, DRAFT) == []
    assert without_placeholders(filled, DRAFT) == filled


def test_text_typed_inside_a_prompts_brackets_is_kept():
    from engine.letters.merge import unfilled_prompts, without_placeholders

    mine = "[Our inspection in May meant three weekends of work]"
    edited = DRAFT.replace("[Why this matters in your school]", mine)
    assert unfilled_prompts(edited, DRAFT) == []
    assert without_placeholders(edited, DRAFT) == edited
    # A bracketed line of the member's own, next to the untouched prompt: only the prompt goes.
    both = DRAFT.replace("Closing.", f"{mine}\n\nClosing.")
    assert without_placeholders(both, DRAFT) == f"Dear Ms Alden,\n\nOpening.\n\n{mine}\n\nClosing.\n"
