"""Plain share links for the campaign page, offered to a member once they have acted.

Ordinary <a href> URLs built here on the server: no third-party script, image
or frame reaches the member's page, so nothing from another site loads until
the member follows a link themselves.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from engine.settings import Settings

# Letter states after which the member has done their part: asked us to send, sent, or sent it
# themselves; and a pledge made.
ACTED = ("queued", "sent", "replied", "overdue", "followed_up", "self_sent", "pledged")


def _url(base: str, **query: str) -> str:
    # %20 for spaces, not "+": mail programs and some apps show a "+" as it is.
    return f"{base}?{urlencode(query, quote_via=_quote)}"


def _quote(text: str, safe: str = "", encoding: str | None = None, errors: str | None = None) -> str:
    return quote(text, safe="", encoding=encoding, errors=errors)


def share_links(settings: Settings) -> dict[str, Any] | None:
    """The campaign page's URL, its text and one link per way of sharing; None when
    CAMPAIGN_SHARE_URL is unset."""
    url = settings.share_url
    if not url:
        return None
    text = settings.share_text
    both = f"{text} {url}"
    links = [
        # No recipient: the member chooses whom to write to.
        ("Email", "mailto:" + _url("", subject=settings.campaign_name, body=f"{text}\n\n{url}")),
        ("WhatsApp", _url("https://wa.me/", text=both)),
        ("X", _url("https://x.com/intent/post", text=text, url=url)),
        ("Facebook", _url("https://www.facebook.com/sharer/sharer.php", u=url)),
        ("LinkedIn", _url("https://www.linkedin.com/sharing/share-offsite/", url=url)),
    ]
    return {"url": url, "text": text, "links": [{"label": label, "href": href} for label, href in links]}
