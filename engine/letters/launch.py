"""Launching a wave: deciding who takes part, merging each member's letter, and storing it.

A launch creates, in one transaction, one letter per eligible member with the
merge frozen (subject, text, the target's details, the member's details), a
reference and a personal link, and queues one invitation per letter.
Launching again only adds letters for members who have none yet.

Longer than most modules because merging in worker processes and writing in
the main one are one pipeline tuned together (see bench/bench_launch.py).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr
from typing import Any

from sqlalchemy import Connection, Engine, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from engine.errors import CampaignError
from engine.letters.escalation import after_rule, judge_earlier_letters, judged, load_after, outside_after
from engine.letters.links import (
    letter_link,
    link_token,
    new_link_nonce,
    new_message_id,
    new_reference,
    token_hash,
    unsubscribe_link,
)
from engine.letters.merge import (
    Target,
    employer_target,
    fixed_target,
    member_context,
    mp_target,
    pledge_target,
    sharing_context,
    wave_context,
)
from engine.letters.processes import exit_with_parent, idle_core
from engine.letters.render import WaveRenderer, freeze_templates
from engine.letters.similarity import similar_letters
from engine.letters.targeting import outside_nations, outside_where
from engine.letters.waves import get_wave
from engine.settings import Settings
from engine.store.db import (
    PreparedInsert,
    compress_fast,
    copy_rows,
    insert_rows,
    prepare_insert,
    reserve_ids,
    sqlite_cache,
    sqlite_dialect,
)
from engine.store.events import record_event
from engine.store.models import (
    employer_table,
    letter_table,
    member_table,
    mp_table,
    outbox_table,
    school_table,
    utcnow,
    wave_table,
)

SKIP_REASONS = (
    "outside_nations",
    "not_selected",
    "opted_out",
    "no_email",
    "unresolved",
    "no_employer",
    "no_employer_contact",
)
# Not a skip: a --one-per-target wave's member whose target's letter another member holds.
SHARES_LETTER = "shares_letter"
_PAGE = 1000
# SQLite's page cache during a launch, for the indexes of a wave's random keys: 64 MB cut the
# writes for 100,000 letters to a third; 128 MB took 350 MB of memory at 100,000 (bench_launch).
_SQLITE_CACHE_MB = 64


# ---- eligibility and launch ---------------------------------------------------


_MEMBER_COLUMNS = (
    "id",
    "membership_no",
    "first_name",
    "last_name",
    "email",
    "postcode",
    "school_urn",
    "address_line1",
    "address_line2",
    "address_line3",
    "town",
    "role",
    "branch",
    "region",
    "custom",
    "constituency_code",
    "constituency_name",
    "mp_status",
    "mp_detail",
    "employer_status",
    "employer_detail",
    "employer_key",
    "employer_name",
    "mail_opt_out_at",
)
_MP_COLUMNS = (
    "constituency_code",
    "constituency_name",
    "name",
    "email",
    "address_as",
    "postal_address",
    "party",
)
_CONTACT_COLUMNS = ("employer_key", "name", "email", "postal_address", "salutation")


def _candidates(wave: dict[str, Any]) -> Any:
    """Every member with what deciding and merging needs, in id order.

    The wave's nations, --where and --after are decided row by row, so that
    those left out are counted with the reason rather than never seen. (A wave
    with --after must have been through `escalation.load_after`.)
    """
    m, s, mp, c, lt = member_table.c, school_table.c, mp_table.c, employer_table.c, letter_table.c
    joined = (
        member_table.outerjoin(school_table, s.urn == m.school_urn)
        .outerjoin(mp_table, mp.constituency_code == m.constituency_code)
        .outerjoin(employer_table, c.employer_key == m.employer_key)
    )
    # The member's letter in this wave, if any, looked up from each member's row by the unique
    # index. Not a join: PostgreSQL plans it on statistics that say the wave has no letters (the
    # launch's own rows are not counted until it commits) and re-read every letter stored so
    # far for each member: 20,000 letters took 23 s instead of 3.
    existing = (
        select(lt.id)
        .where(lt.wave_id == wave["id"], lt.member_id == m.id, lt.kind == "letter")
        .scalar_subquery()
    )
    judged: list[Any] = []
    rule = after_rule(wave.get("filters"))
    if rule is not None:
        joined, judged = judge_earlier_letters(joined, rule, utcnow())
    stmt = (
        select(
            *(m[name] for name in _MEMBER_COLUMNS),
            s.name.label("school_name"),
            s.constituency_code.label("school_constituency_code"),
            s.la_code.label("school_la_code"),
            *(mp[name].label(f"mp_{name}") for name in _MP_COLUMNS),
            *(c[name].label(f"contact_{name}") for name in _CONTACT_COLUMNS),
            existing.label("letter_id"),
            *judged,
        )
        .select_from(joined)
        .order_by(m.id)
    )
    return stmt


def out_of_scope(row: Mapping[str, Any], wave: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) when a member is outside the wave's nations, --where or --after, else None."""
    detail = outside_nations(row, wave["target"], wave.get("nations"))
    if detail:
        return "outside_nations", detail
    detail = outside_where(row, wave.get("filters")) or outside_after(row, after_rule(wave.get("filters")))
    if detail:
        return "not_selected", detail
    return None


def skip_reason(row: Mapping[str, Any], target_kind: str) -> str | None:
    """Why this member cannot take part in a wave aimed at `target_kind`, or None."""
    if row["mail_opt_out_at"] is not None:
        return "opted_out"
    if not row["email"]:
        return "no_email"
    if target_kind == "mp" and (row["mp_status"] != "resolved" or row["mp_name"] is None):
        return "unresolved"
    if target_kind == "employer":
        # Supply, central and retired staff have no school, so no employer to write to.
        if row["employer_status"] == "no_employer":
            return "no_employer"
        if row["employer_status"] != "resolved":
            return "unresolved"
        if row["contact_employer_key"] is None:
            return "no_employer_contact"
    return None


def target_for(row: dict[str, Any], wave: dict[str, Any], cache: dict[str, Target]) -> Target:
    kind = wave["target"]
    if kind == "pledge":
        key = "pledge"
        if key not in cache:
            cache[key] = pledge_target(wave)
    elif kind == "fixed":
        key = "fixed"
        if key not in cache:
            cache[key] = fixed_target(wave)
    elif kind == "mp":
        key = "mp:" + row["constituency_code"]
        if key not in cache:
            cache[key] = mp_target({name: row[f"mp_{name}"] for name in _MP_COLUMNS})
    else:
        key = "employer:" + row["employer_key"]
        if key not in cache:
            cache[key] = employer_target({name: row[f"contact_{name}"] for name in _CONTACT_COLUMNS})
    return cache[key]


# ---- one letter per target ------------------------------------------------------


def _target_key(row: Mapping[str, Any], target_kind: str) -> str | None:
    """What Letter.target_key will hold for this member's letter (None: the fixed recipient)."""
    if target_kind == "employer":
        return row["employer_key"]
    if target_kind == "mp":
        return row["constituency_code"]
    return None


@dataclass
class SharePlan:
    """Who holds each target's one letter in a --one-per-target wave, and who shares it.

    The lead is the eligible member with the lowest membership number, unless the target already
    has the wave's letter from an earlier launch: its holder stays the lead, and members selected
    since share that letter (they are counted, but the letter made before them does not name them).
    """

    # lead's member id → everyone the letter names, lead first: [{membership_no, name}, …]
    officials: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    # sharing member's id → {membership_no, lead, target, named}
    sharing: dict[int, dict[str, Any]] = field(default_factory=dict)


def share_plan(conn: Connection, wave: dict[str, Any]) -> SharePlan:
    """Group the wave's eligible members by target, and pick each target's lead."""
    lt, m = letter_table.c, member_table.c
    holders: dict[str | None, dict[str, Any]] = {}
    for target_key, target_name, membership_no, snapshot in conn.execute(
        select(lt.target_key, lt.target_name, m.membership_no, lt.merge_snapshot)
        .join(member_table, m.id == lt.member_id)
        .where(lt.wave_id == wave["id"], lt.kind == "letter")
        .order_by(lt.id)
    ):
        named = {o["membership_no"] for o in (snapshot or {}).get("officials") or ()} | {membership_no}
        holders.setdefault(target_key, {"lead": membership_no, "target": target_name, "named": named})
    groups: dict[str | None, list[Mapping[str, Any]]] = {}
    for row in conn.execute(_candidates(wave)).mappings():
        if out_of_scope(row, wave) or skip_reason(row, wave["target"]):
            continue
        groups.setdefault(_target_key(row, wave["target"]), []).append(row)
    plan = SharePlan()
    for key, rows in groups.items():
        holder = holders.get(key)
        if holder is None:
            rows = sorted(rows, key=lambda row: (row["membership_no"], row["id"]))
            lead = rows[0]
            plan.officials[lead["id"]] = [
                {"membership_no": row["membership_no"], "name": f"{row['first_name']} {row['last_name']}"}
                for row in rows
            ]
            holder = {
                "lead": lead["membership_no"],
                "target": _target_name(lead, wave),
                "named": {row["membership_no"] for row in rows},
            }
        for row in rows:
            if row["membership_no"] == holder["lead"]:
                continue
            plan.sharing[row["id"]] = {
                "membership_no": row["membership_no"],
                "lead": holder["lead"],
                "target": holder["target"],
                "named": row["membership_no"] in holder["named"],
            }
    return plan


def _target_name(row: Mapping[str, Any], wave: dict[str, Any]) -> str:
    if wave["target"] == "employer":
        return row["contact_name"]
    if wave["target"] == "mp":
        return row["mp_name"]
    return wave["fixed_name"]


@dataclass
class LaunchResult:
    wave: str
    created: int = 0
    already: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_members: list[dict[str, str]] = field(default_factory=list)
    invitations_queued: int = 0
    # --one-per-target: members named in (or, joining later, sharing) a letter another member holds.
    sharing: int = 0
    sharing_members: list[dict[str, Any]] = field(default_factory=list)
    # Targets that would get more than `similar_warn` near-identical letters (similarity.py).
    similar_warn: int = 0
    similar: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def letter_date(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


class Merger:
    """Merges one member at a time into a letter and its invitation, for launch and preview alike."""

    def __init__(self, wave: dict[str, Any], settings: Settings, launched_at: datetime):
        self.wave = wave
        self.settings = settings
        self.secret = settings.require_secret()
        self.renderer = WaveRenderer(wave["frozen"])
        self.now = utcnow()
        self.expires = launched_at + timedelta(days=wave["link_days"])
        self.date = letter_date(launched_at)
        self.wave_ctx = wave_context(wave)
        self.campaign_ctx = settings.campaign_context()
        self.custom_fields = tuple(wave["frozen"].get("custom_fields") or ())
        self.domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
        self.targets: dict[str, Target] = {}
        self.references: set[str] = set()
        # --one-per-target waves: who holds each target's letter (set by whoever launches).
        self.plan: SharePlan | None = None

    def merge(
        self, row: Mapping[str, Any], officials: list[dict[str, str]] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(letter row, invitation outbox row) for one eligible member's candidate row.

        `officials`: in a --one-per-target wave, everyone who shares the letter, this member first.
        """
        settings = self.settings
        target = target_for(row, self.wave, self.targets)
        member = member_context(row, row["school_name"], self.custom_fields)
        reference = _unique_reference(self.references)
        nonce = new_link_nonce()
        token = link_token(self.secret, nonce)
        snapshot: dict[str, Any] = {"member": {k: v for k, v in member.items() if v}, "date": self.date}
        if officials:
            snapshot["officials"] = officials
        letter_ctx = {"reference": reference, "date": self.date, **sharing_context(snapshot)}
        context = {
            "member": member,
            "target": target.context(),
            "wave": self.wave_ctx,
            "letter": letter_ctx,
            "link": letter_link(settings.base_url, token),
            "campaign": self.campaign_ctx,
        }
        subject, text = self.renderer.letter(context)
        letter = {
            "wave_id": self.wave["id"],
            "member_id": row["id"],
            "reference": reference,
            "kind": "letter",
            "state": "drafted",
            "subject": subject,
            "body_text": text,
            "target_kind": target.kind,
            "target_key": target.key,
            "target_name": target.name,
            "target_email": target.email,
            "target_salutation": target.salutation,
            "target_address": target.address,
            # Empty fields are left out: they merge as blanks either way.
            "merge_snapshot": snapshot,
            "link_nonce": nonce,
            "token_hash": token_hash(token),
            "token_expires_at": self.expires,
            "created_at": self.now,
            "updated_at": self.now,
        }
        context["letter"] = {**letter_ctx, "subject": subject, "text": text}
        context["unsubscribe_link"] = unsubscribe_link(settings.base_url, self.secret, reference, nonce)
        invitation = {
            "kind": "invitation",
            "to_addr": formataddr((member["name"], member["email"])),
            "subject": self.renderer.invitation_subject(context),
            "message_id": new_message_id(reference, "invitation", self.domain),
            "status": "queued",
            "attempts": 0,
            "created_at": self.now,
        }
        return letter, invitation


@dataclass
class _MergedPage:
    size: int
    letters: list[dict[str, Any]] | PreparedInsert = field(default_factory=list)
    invitations: list[dict[str, Any]] | PreparedInsert = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    already: int = 0
    skipped: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    sharing: list[dict[str, Any]] = field(default_factory=list)


def _merge_page(
    page: Sequence[Mapping[str, Any]], merger: Merger, list_skipped: bool, first_id: int | None = None
) -> _MergedPage:
    """Decide and merge one page of candidate members; touches no database.

    With `first_id`, letters get ids from it on, so their invitations can
    name them without reading them back.
    """
    target_kind = merger.wave["target"]
    merged = _MergedPage(size=len(page))
    letters: list[dict[str, Any]] = []
    invitations: list[dict[str, Any]] = []
    for row in page:
        if row["letter_id"] is not None:
            merged.already += 1
            continue
        scope = out_of_scope(row, merger.wave)
        if scope:
            reason, detail = scope
            listed = {"membership_no": row["membership_no"], "reason": reason, "detail": detail}
            merged.skipped.append((reason, listed if list_skipped else None))
            continue
        reason = skip_reason(row, target_kind)
        if reason:
            merged.skipped.append((reason, _skipped(row, reason, target_kind) if list_skipped else None))
            continue
        officials = None
        if merger.plan is not None:
            if row["id"] in merger.plan.sharing:
                merged.sharing.append(merger.plan.sharing[row["id"]])
                continue
            officials = merger.plan.officials.get(row["id"])
        letter, invitation = merger.merge(row, officials)
        if first_id is not None:
            letter["id"] = invitation["letter_id"] = first_id + len(letters)
        letters.append(letter)
        invitations.append(invitation)
    merged.references = [letter["reference"] for letter in letters]
    merged.letters, merged.invitations = letters, invitations
    return merged


# Large launches merge in a second process while this one reads and writes the
# database, when a core is free for it: rendering and the database's writing then
# use both cores. Small ones are not worth a process's start-up.
_PARALLEL_FROM = 20_000
_WORKERS = 1


_worker_merger: Merger | None = None


def _start_worker(wave: dict[str, Any], settings: Settings, parent_pid: int) -> None:
    global _worker_merger
    exit_with_parent(parent_pid)
    _worker_merger = Merger(wave, settings, wave["launched_at"])


def _merge_in_worker(
    keys: list[str], rows: list[tuple[Any, ...]], list_skipped: bool, first_id: int | None
) -> _MergedPage:
    """Merge a page in the worker process, and on SQLite (`first_id` given) prepare its inserts."""
    assert _worker_merger is not None
    page = [dict(zip(keys, row, strict=True)) for row in rows]
    merged = _merge_page(page, _worker_merger, list_skipped, first_id)
    if merged.letters and first_id is not None:
        dialect = sqlite_dialect()
        merged.letters = prepare_insert(letter_table, merged.letters, dialect)  # type: ignore[arg-type]
        merged.invitations = prepare_insert(outbox_table, merged.invitations, dialect)  # type: ignore[arg-type]
    return merged


def launch_wave(
    engine: Engine,
    name: str,
    settings: Settings,
    *,
    list_skipped: bool = False,
    parallel: bool | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    similar_warn: int | None = None,
    by: str | None = None,
) -> LaunchResult:
    """Create every eligible member's letter and queue their invitation, all in one transaction.
    `by`: who launched it, for the log (a staff user's email; the command line says nothing).

    Then name each target that would get more than `similar_warn` (default: the setting;
    0: no check) letters more than 90% the same text.

    Only this process touches the database. With `parallel` (by default for
    large waves when a core is idle: `idle_core`) a worker process merges each
    page while this one stores the previous page and reads the next. (The
    worker is spawned: a script that calls this must guard its own code with
    `if __name__ == "__main__":`.)
    """
    result = LaunchResult(wave=name)
    result.similar_warn = settings.similar_warn if similar_warn is None else similar_warn
    with ExitStack() as stack:
        conn = stack.enter_context(engine.connect())
        if conn.dialect.name == "sqlite":
            stack.enter_context(sqlite_cache(conn, _SQLITE_CACHE_MB))
        stack.enter_context(conn.begin())
        wave = get_wave(conn, name)
        load_after(conn, wave, launching=True)
        now = utcnow()
        if wave["status"] == "draft":
            wave["frozen"] = freeze_templates(wave, settings)
            wave["launched_at"] = now
        # Written first in every launch: on SQLite this takes the write lock, so
        # the letter ids counted out below cannot be taken by anyone else.
        conn.execute(
            wave_table.update()
            .where(wave_table.c.id == wave["id"])
            .values(status="launched", launched_at=wave["launched_at"], frozen=wave["frozen"], updated_at=now)
        )
        if conn.dialect.name == "postgresql":
            compress_fast(conn)
        stmt = _candidates(wave)
        # One candidate row per member (every join is to at most one row), and counting the
        # members does not run the candidates' joins and lookups for each.
        total = conn.execute(select(func.count()).select_from(member_table)).scalar_one()
        if on_start is not None:
            on_start(total)
        sqlite = conn.dialect.name == "sqlite"
        if parallel is None:
            parallel = total >= _PARALLEL_FROM and idle_core()
        merger = Merger(wave, settings, wave["launched_at"])
        if wave["one_per_target"]:
            # Decided before merging: a target's members can fall on different pages. Such a wave
            # makes one letter per employer, too few to be worth a worker process.
            merger.plan = share_plan(conn, wave)
            parallel = False
        next_id = (conn.execute(select(func.max(letter_table.c.id))).scalar() or 0) + 1 if sqlite else None
        pool = None
        if parallel:
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=_WORKERS,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(wave, settings, os.getpid()),
                )
            )
        # Pages in flight: a worker merges one while this process stores an older one.
        in_flight: deque[Future[_MergedPage]] = deque()
        # One page more than workers: the worker finds the next page waiting when it finishes one.
        depth = _WORKERS + 1 if pool is not None else 0
        last_id = 0
        while True:
            rows = conn.execute(stmt.where(member_table.c.id > last_id).limit(_PAGE))
            if pool is not None:
                keys = list(rows.keys())
                page: Sequence[Any] = [tuple(row) for row in rows]
                if page:
                    in_flight.append(pool.submit(_merge_in_worker, keys, page, list_skipped, next_id))
                    last_id = page[-1][keys.index("id")]
            else:
                # Plain dicts: deciding and merging read each row's columns some thirty times,
                # and a row mapping's lookups cost more than making the dict (a tenth of a merge).
                keys = list(rows.keys())
                page = [dict(zip(keys, row, strict=True)) for row in rows]
                if page:
                    done: Future[_MergedPage] = Future()
                    done.set_result(_merge_page(page, merger, list_skipped, next_id))
                    in_flight.append(done)
                    last_id = page[-1]["id"]
            if next_id is not None:
                next_id += len(page)
            while in_flight and (len(in_flight) > depth or not page):
                _store_page(conn, in_flight.popleft().result(), result, progress)
            if not page:
                break
        record_event(
            conn,
            "wave.launch",
            wave=name,
            created=result.created,
            already=result.already,
            skipped=result.skipped,
            sharing=result.sharing,
            **({"by": by} if by else {}),
        )
    if result.similar_warn and wave["target"] != "pledge":
        # After the commit: reading the letters back costs less than carrying their texts
        # through the merge pipeline, and holds no write lock.
        with engine.connect() as conn:
            result.similar = similar_letters(conn, wave["id"], result.similar_warn)
    return result


def _store_page(
    conn: Connection, merged: _MergedPage, result: LaunchResult, progress: Callable[[int], None] | None
) -> None:
    result.already += merged.already
    for reason, detail in merged.skipped:
        result.skipped[reason] = result.skipped.get(reason, 0) + 1
        if detail is not None:
            result.skipped_members.append(detail)
    result.sharing += len(merged.sharing)
    result.sharing_members.extend(merged.sharing)
    letters, invitations = merged.letters, merged.invitations
    if merged.references:
        _check_references(conn, merged.references)
        if conn.dialect.name == "postgresql":
            assert isinstance(letters, list) and isinstance(invitations, list)
            ids = reserve_ids(conn, letter_table, len(letters))
            for letter, invitation, letter_id in zip(letters, invitations, ids, strict=True):
                letter["id"] = invitation["letter_id"] = letter_id
            copy_rows(conn, letter_table, letters)
            copy_rows(conn, outbox_table, invitations)
        else:
            insert_rows(conn, letter_table, letters)
            insert_rows(conn, outbox_table, invitations)
        result.created += len(merged.references)
        result.invitations_queued += len(merged.references)
    if progress is not None:
        progress(merged.size)


def left_out(engine: Engine, name: str, earlier: dict[str, int] | None = None) -> dict[str, int]:
    """How many members have no letter in this wave, by the reason a launch now would give.

    For `wave status`: members outside the wave's nations, --where or --after,
    those who cannot take part (opted out, no email, unresolved…), and, in a
    --one-per-target wave, those who share a letter another member holds
    (`shares_letter`: not left out, but with no letter of their own). A wave
    with --after also counts into `earlier` every member by what became of
    their letter in the earlier wave (`escalation.judged`).
    """
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        wave = get_wave(conn, name)
        load_after(conn, wave)
        sharing = share_plan(conn, wave).sharing if wave["one_per_target"] else {}
        rule = after_rule(wave.get("filters"))
        for row in conn.execute(_candidates(wave)).mappings():
            if rule is not None and earlier is not None:
                word = judged(row)
                earlier[word] = earlier.get(word, 0) + 1
            if row["letter_id"] is not None:
                continue
            scope = out_of_scope(row, wave)
            reason = scope[0] if scope else skip_reason(row, wave["target"])
            if reason is None and row["id"] in sharing:
                reason = SHARES_LETTER
            if reason:
                counts[reason] = counts.get(reason, 0) + 1
    return counts


def _skipped(row: dict[str, Any], reason: str, target_kind: str) -> dict[str, Any]:
    detail = None
    if reason in ("unresolved", "no_employer"):
        detail = row["mp_detail"] if target_kind == "mp" else row["employer_detail"]
    elif reason == "no_employer_contact":
        detail = f"no contact for {row['employer_key']} ({row['employer_name']})"
    return {"membership_no": row["membership_no"], "reason": reason, "detail": detail}


def preview_merge(
    engine: Engine, name: str, settings: Settings, membership_no: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Merger]:
    """One member's merge exactly as launch would make it, written nowhere.

    Returns (wave, letter row, invitation row, merger). With no member given,
    the first eligible member is used. A launched wave's existing letter is
    shown as stored.
    """
    with engine.connect() as conn:
        wave = get_wave(conn, name)
        load_after(conn, wave)
        if wave["status"] == "draft":
            wave["frozen"] = freeze_templates(wave, settings)
            launched_at = utcnow()
        else:
            launched_at = wave["launched_at"]
        merger = Merger(wave, settings, launched_at)
        if wave["one_per_target"]:
            merger.plan = share_plan(conn, wave)
        sharing = merger.plan.sharing if merger.plan is not None else {}
        stmt = _candidates(wave)
        if membership_no:
            row = conn.execute(stmt.where(member_table.c.membership_no == membership_no)).first()
            if row is None:
                raise CampaignError(f"no member {membership_no!r}")
            candidates = [dict(row._mapping)]
            scope = out_of_scope(candidates[0], wave)
            if scope:
                raise CampaignError(f"member {membership_no} is outside this wave: {scope[1]}")
            if candidates[0]["id"] in sharing:
                lead = sharing[candidates[0]["id"]]["lead"]
                raise CampaignError(
                    f"member {membership_no} shares the letter member {lead} holds: preview {lead}"
                )
        else:
            candidates = (dict(r._mapping) for r in conn.execute(stmt.limit(5000)))
        for row in candidates:
            if out_of_scope(row, wave) or row["id"] in sharing:
                continue
            reason = skip_reason(row, wave["target"])
            if reason is None:
                break
            if membership_no:
                raise CampaignError(f"member {membership_no} cannot take part: {reason.replace('_', ' ')}")
        else:
            raise CampaignError(f"wave {name!r} has no eligible member to preview")
        if row["letter_id"] is not None:
            stored = conn.execute(select(letter_table).where(letter_table.c.id == row["letter_id"])).one()
            letter = dict(stored._mapping)
            # Its latest invitation: a letter also has its own mail and receipt once sent, and
            # a second invitation after `wave reinvite`.
            o = outbox_table.c
            invitation = dict(
                conn.execute(
                    select(outbox_table)
                    .where(o.letter_id == letter["id"], o.kind == "invitation")
                    .order_by(o.id.desc())
                    .limit(1)
                )
                .one()
                ._mapping
            )
            return wave, letter, invitation, merger
    officials = merger.plan.officials.get(row["id"]) if merger.plan is not None else None
    letter, invitation = merger.merge(row, officials)
    return wave, letter, invitation, merger


def _unique_reference(taken: set[str]) -> str:
    while True:
        reference = new_reference()
        if reference not in taken:
            taken.add(reference)
            return reference


def _check_references(conn: Connection, refs: list[str]) -> None:
    """Refuse a reference an earlier launch already used (50 random bits: about 1 in 10^15 a letter).

    The launch's transaction is then rolled back whole, and a re-run draws new references.
    """
    reference = letter_table.c.reference
    if conn.dialect.name == "postgresql":
        # One array parameter: a thousand-parameter IN is too long for psycopg to cache its
        # parsing, which then cost more than the lookup.
        taken = reference == any_(bindparam("refs", refs, type_=ARRAY(reference.type)))
    else:
        taken = reference.in_(refs)
    if conn.execute(select(reference).where(taken).limit(1)).first():
        raise CampaignError("a letter reference clashed with an earlier one: nothing was launched; re-run")
