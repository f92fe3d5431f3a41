"""Text that may end up in a mail header: what it must not hold.

Any imported value can reach a header (a template can put any field in a
subject), so members, contacts, MPs, schools and waves are checked with the
same rule the message builder enforces.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

# What no header value may hold: the C0 controls but tab, DEL, the C1 controls (NEL, U+0085,
# among them) and the Unicode line and paragraph separators. CR and LF would start a header of
# the sender's choosing; the others are line breaks to str.splitlines() and to some mail
# clients, or NULs and escapes that relays refuse and PostgreSQL cannot store.
_NOT_IN_A_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def header_problem(value: str) -> str | None:
    """What in `value` no mail header may hold ('a line break (U+000A)'), or None.

    Names the character, never the value: values are members' personal data.
    """
    # Every character refused is unprintable, and str.isprintable is several times faster than a
    # search: this runs for every header of every message sent.
    found = None if value.isprintable() else _NOT_IN_A_HEADER.search(value)
    if found is None:
        return None
    char = found.group()
    kind = "a line break" if char in _LINE_BREAKS else "a control character"
    return f"{kind} (U+{ord(char):04X})"


def header_problems(
    values: Mapping[str, str | None], *, multiline: Collection[str] = ()
) -> list[tuple[str, str]]:
    """(field, problem) for each value that could not go into a mail header.

    Any imported value may reach one (a template can put any field in a subject). Fields in
    `multiline` (postal addresses) may break lines, but nothing else.
    """
    # The whole row at once first: this runs for every row of a 450,000-member import.
    if header_problem("".join(filter(None, values.values()))) is None:
        return []
    problems = []
    for name, value in values.items():
        for line in (value or "").splitlines() if name in multiline else [value or ""]:
            problem = header_problem(line)
            if problem is not None:
                problems.append((name, f"contains {problem}"))
                break
    return problems
