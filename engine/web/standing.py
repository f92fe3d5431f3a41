"""Where a member's letters in a wave stand, in words for their page: what happened, and what next."""

from __future__ import annotations

from datetime import datetime

from engine.letters.confirm import MemberLetter, MemberWave

_NAME = {"letter": "letter", "follow_up": "follow-up", "chaser": "reminder"}


def _on(moment: datetime | None) -> str:
    return f" on {moment.day} {moment:%B %Y}" if moment else ""


def _name(found: MemberLetter, several: bool) -> str:
    """'Your letter', 'Your follow-up'; the first letter is 'Your first letter' once there are others."""
    kind = found.letter["kind"]
    return "Your first letter" if kind == "letter" and several else f"Your {_NAME[kind]}"


def _lines(found: MemberLetter, name: str, current: MemberLetter | None) -> list[str]:
    letter = found.letter
    target = letter["target_name"]
    state = letter["state"]
    if found.undecided and found is not current:
        return [f"{name} was not sent: a newer letter, below, takes its place."]
    if found.undecided:
        if found.expired():
            return [f"{name} was waiting for you, but its link ran out{_on(letter['token_expires_at'])}."]
        return [f"{name} is ready for you to check, below."]
    if state == "queued":
        return [f"Thank you. {name} is on its way to {target}. We will email you a copy when it has gone."]
    if state == "opted_out":
        return [
            f"You chose not to send {name.lower()}. Nothing was sent, and we will not remind you about it."
        ]
    if state == "bounced":
        reason = f" ({letter['bounce_reason']})" if letter["bounce_reason"] else ""
        return [f"{name} to {target} came back undelivered: their address refused it{reason}."]
    if state == "unreachable":
        return [
            f"Our email to you about this {_NAME[letter['kind']]} came back undelivered, so it has not "
            f"been sent to {target}."
        ]
    if state == "failed":
        reason = letter["bounce_reason"] or "their address refused it"
        return [f"We could not send {name.lower()} to {target}: {reason}."]
    if state == "self_sent":
        lines = [f"You sent {name.lower()} yourself{_on(letter['decided_at'])}. Thank you."]
    else:
        lines = [f"{name} was sent to {target}{_on(letter['sent_at'])}."]
    if letter["replied_at"]:
        lines.append(f"{target} replied{_on(letter['replied_at'])}.")
    elif state == "overdue":
        lines.append(f"{target} has not replied yet.")
    return lines


def standing(page: MemberWave, organising_email: str) -> tuple[list[str], str]:
    """(what has happened to each of the member's letters, oldest first; the next step)."""
    several = len(page.letters) > 1
    current = page.current
    lines = [line for found in page.letters for line in _lines(found, _name(found, several), current)]
    latest = page.letters[-1].letter
    target, reference = latest["target_name"], latest["reference"]
    if current is not None:
        what = _NAME[current.letter["kind"]]
        if current.expired():
            return lines, f"Ask for a new link below to check your {what} and choose what to do."
        return (
            lines,
            f"Read your {what} below, change it if you like, then choose one of the options after it.",
        )
    state = latest["state"]
    if state == "queued":
        return lines, "Nothing more to do for now. Thank you for taking part."
    if state == "opted_out":
        return lines, "Nothing more to do. Thank you for reading it."
    if state == "unreachable":
        return lines, f"Please write to {organising_email} with an email address that reaches you."
    if state in ("failed", "bounced"):
        return lines, (
            "You can still print it and post it, or send it from your own email: "
            f"please tell {organising_email} if you do."
        )
    if latest["replied_at"]:
        return lines, (
            f"If {target}'s reply has not reached us, please forward it to {organising_email}, keeping "
            f"the reference {reference} in the subject. If there is a follow-up to send, it will "
            "appear on this page, and we will email you."
        )
    return lines, (
        f"If {target} replies to you, please forward the reply to {organising_email}, keeping the "
        f"reference {reference} in the subject."
    )


def heading(found: MemberLetter, several: bool) -> str:
    """The heading over one of the member's letters on their page."""
    letter = found.letter
    name = _name(found, several)
    if letter["state"] == "opted_out" or found.undecided:
        return f"{name} (not sent)"
    if letter["sent_at"]:
        return f"{name}, sent{_on(letter['sent_at'])}"
    if letter["state"] == "self_sent":
        return f"{name}, sent by you"
    return name
