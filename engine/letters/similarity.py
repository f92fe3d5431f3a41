"""Near-identical letters to one target: the warning at launch and in `wave status`.

An MP's office that receives a hundred copies of one text reads it as a
lobbying campaign and answers it once; letters in members' own words are read
as constituents'. For each target with more than N letters in a wave, the
letters are grouped by likeness to a few representatives, and a target whose
largest group holds more than N letters that are more than 90% the same is
named, with the count, so organisers can ask members to personalise theirs.

Likeness is cheap on purpose, so a 100,000-letter launch barely notices it:
each text is cut into sentences and clauses (at full stops, commas and line
ends), pieces under 25 characters (salutation, signature, address lines) left
out, and two texts are alike by the share of their characters in pieces they
have word for word in common, out of the longer text's. A merged role or school
changes the piece it is in (a few per cent of a letter: two merged MP letters
are about 96% alike, two to the Secretary of State about 94%); a member's own
paragraph, or their words in most sentences, a good deal more (one short
paragraph: about 84%). (Word pairs would catch a
one-word edit too, at six times the cost per letter.) A target with more than 30
letters has its first 30 examined, and the share found among them applied to
the rest (the count then says "about"). The texts compared are
the letters as they now stand: at launch the merged text, later a member's saved
edits, so `wave status` shows what personalising has done. The sending worker
does not check again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from engine.store.models import letter_table

SAME_TEXT = 0.9  # more than this share of their text in common: "the same text"
SHORT = 25  # characters: "Yours sincerely", a name, an address line
# Representatives kept per target: letters like none of them are counted as personal.
_GROUPS = 4
# Letters examined per target: beyond it, the share found in them is applied to the rest.
# A launch's letters are one template's merges, and the warning needs the share roughly,
# not the last letter: 30 tell it within about ten per cent.
SAMPLE = 30
# Letters that will not reach the target are left out of the count.
_NOT_GOING = ("opted_out", "unreachable", "failed")


def sentences(text: str) -> tuple[frozenset[str], int]:
    """A text's sentences and clauses, and their length in characters (each counted once).

    Pieces shorter than SHORT are left out: the salutation, the signature and the address
    lines differ in every letter and say nothing of what it says.
    """
    pieces = text.replace("\n", ". ").replace(", ", ". ").split(". ")
    units = frozenset(piece for piece in pieces if len(piece) >= SHORT)
    return units, sum(map(len, units))


def likeness(a: tuple[frozenset[str], int], b: tuple[frozenset[str], int]) -> float:
    """The share of characters in sentences both texts have, out of the longer's (1.0: the same)."""
    longest = max(a[1], b[1])
    return sum(map(len, a[0] & b[0])) / longest if longest else 1.0


@dataclass
class _Group:
    sentences: tuple[frozenset[str], int]
    letters: int = 1
    likeness: float = 1.0  # the sum over its letters, the representative's own 1.0 included


@dataclass
class _Target:
    name: str
    examined: int = 0
    groups: list[_Group] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.examined += 1
        cut = sentences(text)
        for group in self.groups:
            alike = likeness(cut, group.sentences)
            if alike > SAME_TEXT:
                group.letters += 1
                group.likeness += alike
                return
        if len(self.groups) < _GROUPS:
            self.groups.append(_Group(cut))


def similar_letters(conn: Connection, wave_id: int, more_than: int) -> list[dict[str, Any]]:
    """Targets that would get more than `more_than` letters of this wave more than 90% the same.

    Each: target (name), target_key, letters (to that target), similar (the largest group of
    near-identical ones; estimated from the first SAMPLE letters when there are more, and then
    `estimated` is true) and likeness (their average share of text in common), most first.
    """
    lt = letter_table.c
    going = (lt.wave_id == wave_id, lt.kind == "letter", lt.state.not_in(_NOT_GOING))
    # A fixed wave's one target has no key: its name tells it apart.
    crowded = conn.execute(
        select(lt.target_key, lt.target_name, func.count())
        .where(*going)
        .group_by(lt.target_key, lt.target_name)
        .having(func.count() > more_than)
    ).all()
    # Only the sample's texts are read: reading every letter's text back would cost more
    # than the whole comparison (the index on wave and target finds them in id order).
    # Built once, run per target: building a statement costs more than running it.
    sample = (
        select(func.coalesce(lt.final_text, lt.body_text))
        .where(*going, lt.target_name == bindparam("name"))
        .order_by(lt.id)
        .limit(SAMPLE)
    )
    keyed, keyless = sample.where(lt.target_key == bindparam("key")), sample.where(lt.target_key.is_(None))
    warnings = []
    for key, name, letters in crowded:
        found = _Target(name)
        texts = (
            conn.execute(keyless, {"name": name})
            if key is None
            else conn.execute(keyed, {"name": name, "key": key})
        )
        for (text,) in texts:
            found.add(text)
        largest = max(found.groups, key=lambda group: group.letters)
        similar = round(largest.letters * letters / found.examined)
        if similar > more_than:
            warnings.append(
                {
                    "target": name,
                    "target_key": key,
                    "letters": letters,
                    "similar": similar,
                    "estimated": found.examined < letters,
                    "likeness": round(largest.likeness / largest.letters, 3),
                }
            )
    warnings.sort(key=lambda w: (-w["similar"], w["target"]))
    return warnings


def similar_warning_line(warning: dict[str, Any], more_than: int) -> str:
    """One line naming the target, for launch and `wave status`."""
    return (
        f"warning: {warning['target']} would get {'about ' if warning['estimated'] else ''}"
        f"{warning['similar']} of its {warning['letters']} "
        f"letter(s) more than 90% the same text ({warning['likeness']:.0%} alike on average; more "
        f"than {more_than} warns): ask members to put the letter in their own words"
    )
