"""What a reply means for the campaign: a suggestion from its words; the staff's choice stands.

English phrases are weighed, not matched first-come: "we are unable to give a full
answer now but will reply in due course" is a holding reply, not a refusal.
"""

from __future__ import annotations

import re

from engine.errors import CampaignError
from engine.store.models import OUTCOMES

_PHRASES: dict[str, tuple[str, ...]] = {
    "holding": (
        # "will write to the Secretary of State" is the campaign's ask granted, not a promise to answer.
        r"will (respond|reply|write(?! to the secretary of state)|come back|get back|be in touch)",
        r"in due course",
        r"full(er)? (response|reply|answer)",
        r"(get|come) back to you",
        r"(currently|are) (considering|reviewing|looking into)",
        r"(once|when) we have (considered|discussed|reviewed)",
        r"(next|forthcoming) (board|committee|governors'?|trust) meeting",
        r"as soon as (possible|we can|i can)",
    ),
    "refusal": (
        r"(unable|not able|not in a position) to (support|agree|write|commit|take)",
        r"(will|shall|can) ?not (be )?(support|writ|agree|commit|tak)\w*",
        r"won't (support|write|agree|commit)",
        r"(do|does) not (agree|accept|support|consider it appropriate)",
        r"(decline|must decline|respectfully decline)",
        r"not (appropriate|our role|a matter for us)",
    ),
    "supportive": (
        r"(support|agree with|share) (your|the|these) (concern|view|call|request)",
        r"(i|we) (fully |strongly )?support",
        r"(will|shall|happy to|glad to|have) (now )?writ(e|ten) to the secretary of state",
        r"(will|shall|happy to) raise (this|it|the matter)",
        r"(i|we) agree",
        r"(have|has) (added|put) (it|this) (to|on) the agenda",
    ),
    "acknowledgement": (
        r"acknowledge (receipt|your)",
        r"(has|have) been received",
        r"receipt of your (letter|email|e-mail)",
        r"passed (it|this|your \w+) (on )?to",
        r"reference number",
    ),
    "non_committal": (
        r"(take|takes|taking) .{0,30}seriously",
        r"(continue|continues) to (monitor|keep .{0,20}under review)",
        r"(noted|note your|have noted)",
        r"(range of|variety of) (support|measures|wellbeing|well-being)",
        r"already (have|has|provide|offer)",
    ),
}
_COMPILED = {name: [re.compile(p, re.I) for p in phrases] for name, phrases in _PHRASES.items()}
# On equal weight, the reading that asks staff to act first.
_PRECEDENCE = ("holding", "refusal", "supportive", "non_committal", "acknowledgement")


def suggest_outcome(text: str) -> str | None:
    """The likeliest outcome for a reply's text, or None when nothing in it says."""
    text = " ".join(text.split())
    if not text:
        return None
    scores = {name: sum(1 for p in patterns if p.search(text)) for name, patterns in _COMPILED.items()}
    # A plain no outweighs the pleasantries that usually surround it.
    scores["refusal"] *= 2
    best = max(scores.values())
    if best == 0:
        return None  # nothing it says is recognised (another language, say): staff decide
    return next(name for name in _PRECEDENCE if scores[name] == best)


def check_outcome(value: str) -> str:
    value = value.strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {
        "holding_reply": "holding",
        "acknowledgement_only": "acknowledgement",
        "ack": "acknowledgement",
    }
    value = aliases.get(value, value)
    if value not in OUTCOMES:
        raise CampaignError(f"outcome {value!r}: use one of {', '.join(OUTCOMES)}")
    return value
