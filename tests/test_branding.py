"""The union's name, signature, footer and logo come from settings; unset, a plainly fictional union."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SECRET
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.errors import CampaignError
from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.mail.outbox import export_outbox
from engine.settings import Settings

# The smallest PNG there is: a 1x1 transparent pixel.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def branded(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CAMPAIGN_SECRET": TEST_SECRET, **env}, templates_dir=str(ROOT / "templates"))


def invitations(engine, settings: Settings, tmp_path: Path) -> list[email.message.EmailMessage]:
    create_wave(engine, "MPs", MP_WAVE, settings)
    launch_wave(engine, "MPs", settings)
    out = tmp_path / "outbox"
    export_outbox(engine, out, settings)
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(out.glob("*.eml"))
    ]


def parts(message) -> tuple[str, str]:
    return (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    )


def test_the_unions_name_signature_footer_and_logo_come_from_settings(sample, tmp_path):  # noqa: F811
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    settings = branded(
        tmp_path,
        CAMPAIGN_NAME="Northfield Teachers' Association",
        CAMPAIGN_SENDER_NAME="Priya Shah, Campaigns Officer",
        CAMPAIGN_FOOTER="Northfield Teachers' Association, 1 Example Row, Leeds LS1 0XX",
        CAMPAIGN_LOGO=str(logo),
        CAMPAIGN_BASE_URL="https://letters.union.example",
    )
    messages = invitations(sample, settings, tmp_path)
    assert len(messages) == 48
    text, html = parts(messages[0])
    assert "Thank you,\nPriya Shah, Campaigns Officer\nNorthfield Teachers' Association\n" in text
    assert text.rstrip().endswith("Northfield Teachers' Association, 1 Example Row, Leeds LS1 0XX")
    assert '<img src="https://letters.union.example/logo"' in html
    assert "1 Example Row" in html
    assert "Example Schools Union" not in text + html


def test_unset_branding_names_a_plainly_fictional_union_never_the_union(sample, tmp_path):  # noqa: F811
    text, html = parts(invitations(sample, SETTINGS, tmp_path)[0])
    assert "Example Schools Union" in text
    assert "Campaigns Team\nExample Schools Union" in text  # CAMPAIGN_FROM's display name signs
    assert "the union" not in (text + html).lower().replace("the union's", "")
    assert "<img" not in html


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"CAMPAIGN_NAME": "Union\r\nBcc: all@example.org"}, "CAMPAIGN_NAME: must be one line"),
        ({"CAMPAIGN_FOOTER": "x" * 301}, "CAMPAIGN_FOOTER: at most 300 characters"),
    ],
)
def test_a_branding_setting_that_cannot_go_in_a_mail_is_refused_at_once(tmp_path, env, error):
    with pytest.raises(CampaignError, match=error):
        branded(tmp_path, **env)


def test_a_logo_that_is_not_a_png_or_jpeg_is_refused_naming_it(tmp_path):
    fake = tmp_path / "logo.svg"
    fake.write_text("<svg onload='alert(1)'/>")
    with pytest.raises(CampaignError, match=r"CAMPAIGN_LOGO: .*logo.svg is not a PNG or JPEG image"):
        branded(tmp_path, CAMPAIGN_LOGO=str(fake))
    with pytest.raises(CampaignError, match=r"CAMPAIGN_LOGO: cannot read .*missing.png"):
        branded(tmp_path, CAMPAIGN_LOGO=str(tmp_path / "missing.png"))
