"""The union's name, signature, footer and logo come from settings; unset, a plainly fictional union."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
import requests
from conftest import ROOT, TEST_SECRET
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401  (the sample-data fixture)
from test_web import Site, site  # noqa: F401  (the launched member pages)

from engine import system
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
    assert len(messages) == 40
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


def test_the_member_pages_carry_the_logo_and_footer_from_settings(sample, tmp_path):  # noqa: F811
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    settings = branded(
        tmp_path,
        CAMPAIGN_NAME="Northfield Teachers' Association",
        CAMPAIGN_FOOTER="1 Example Row, Leeds LS1 0XX",
        CAMPAIGN_LOGO=str(logo),
    )
    create_wave(sample, "MPs", MP_WAVE, settings)
    launch_wave(sample, "MPs", settings)
    with Site(sample, settings=settings) as branded_site:
        page = requests.get(branded_site.link("M100001"), timeout=30)
        image = requests.get(f"{branded_site.base}/logo", timeout=30)
    assert page.status_code == 200
    assert '<img class="logo" src="/logo" alt="Northfield Teachers&#39; Association"' in page.text
    assert "1 Example Row, Leeds LS1 0XX</footer>" in page.text
    assert "img-src 'self'" in page.headers["Content-Security-Policy"]
    assert (image.status_code, image.headers["Content-Type"], image.content) == (200, "image/png", PNG)


def test_without_a_logo_there_is_no_image_and_no_logo_address(site):  # noqa: F811
    page = requests.get(site.link("M100001"), timeout=30)
    assert "<img" not in page.text and "Example Schools Union" in page.text
    missing = requests.get(f"{site.base}/logo", timeout=30)
    assert missing.status_code == 404 and "This link does not work" in missing.text


def test_a_pdf_download_on_a_server_without_its_library_is_one_line_naming_the_package(site, monkeypatch):  # noqa: F811
    libraries = dict(system.PDF_LIBRARIES)
    libraries["campaign-test-absent"] = system.Need("libcampaign-absent0", "printable letters")
    monkeypatch.setattr(system, "PDF_LIBRARIES", libraries)
    system.weasyprint.cache_clear()
    try:
        response = requests.get(site.link("M100001") + "/letter.pdf", timeout=30)
    finally:
        system.weasyprint.cache_clear()
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "lacks the system package libcampaign-absent0" in response.text
