"""The change model every phase uses: read, plan, journal, apply, verify, and undo.

A phase plans :class:`Change` records (a pure function of the current state and the desired one)
and hands them, grouped by the :class:`Applier` that knows how to make them, to :func:`apply`.
Before a group is applied, each change (with the state it replaces) is written to the phase's
journal, ``<run>/<phase>/journal.jsonl``. When a group fails, every group applied so far in the
phase, the failed one included, is undone in reverse order, and :class:`RolledBack` says so.
:func:`rollback` undoes a phase later from its journal alone.

Appliers must make ``undo`` idempotent and tolerant of a half-applied group (``DROP ... IF
EXISTS``, ``ALTER SYSTEM RESET``), because a failure can strike in the middle of ``apply``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # pandas is imported where a table is made: the programs ragperf runs import this module
    import pandas as pd

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
Mode = Literal["plan", "apply"]


class Config:
    """Mixin of the frozen dataclasses that configure a process ragperf runs (nginx, Redis, the cache
    add-on): the configuration as plain JSON values, for a :class:`Change`'s before/after and a process record."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: paths as strings, tuples as lists."""
        return {
            name: str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()  # type: ignore[call-overload]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """The configuration :meth:`to_dict` wrote; unknown keys are an error naming the known ones."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            names = ", ".join(sorted(known))
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; known: {names}")
        return cls(**data)


def config_diff(current: Config, desired: Config) -> dict[str, list[Any]]:
    """The fields whose values differ, each as ``[old, new]`` JSON values."""
    before, after = current.to_dict(), desired.to_dict()
    return {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}


def diff_text(diff: Mapping[str, Sequence[Any]]) -> str:
    """A :func:`config_diff` in words: ``field old -> new, ...``."""
    return ", ".join(f"{k} {old} -> {new}" for k, (old, new) in diff.items())


def check_ipv4(name: str, value: object) -> None:
    """ValueError naming ``name`` unless ``value`` is an IPv4 address (a server's ``listen_host``)."""
    try:
        ipaddress.IPv4Address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an IPv4 address (0.0.0.0 for every interface)") from None


def check_int(name: str, value: object, low: int, high: int) -> None:
    """ValueError naming ``name`` unless ``value`` is a whole number from ``low`` to ``high`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: must be a whole number from {low} to {high}, not {value!r}")


@dataclass(frozen=True)
class Change:
    """One reversible change of the target.

    ``kind`` names the applier that makes it (``setting``, ``index``, ``column``, ``host`` ...);
    ``before`` is the state it replaces, as read, which is all ``undo`` needs; ``after`` the
    state it creates. ``restart`` marks changes that take effect only after a server restart,
    ``host`` those that change the machine rather than the database.
    """

    kind: str
    name: str
    before: Any
    after: Any
    reason: str
    restart: bool = False
    host: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of_config(
        cls, kind: str, name: str, current: Config | None, desired: Config | None, reason: str,
        details: Mapping[str, Any],
    ) -> Change:  # fmt: skip
        """The change of a server ragperf runs from configuration ``current`` to ``desired`` (None: not running),
        each kept as JSON values (:meth:`Config.to_dict`): ragperf's own process, never a restart of the target."""
        before = None if current is None else current.to_dict()
        after = None if desired is None else desired.to_dict()
        return cls(kind=kind, name=name, before=before, after=after, reason=reason, details=dict(details))

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(**{**data, "details": dict(data.get("details") or {})})


class Applier(Protocol):
    """Makes and unmakes one kind of change."""

    kind: str

    def apply(self, changes: Sequence[Change]) -> None:
        """Make the changes; raise on failure (``undo`` is then called with the same changes)."""

    def undo(self, changes: Sequence[Change]) -> None:
        """Restore each change's ``before``; idempotent, and safe on a half-applied group."""


class StateApplier:
    """An applier whose every change takes one thing from a state ``before`` to a state ``after`` (None: not
    there), so that undo is apply backwards: subclasses set ``kind`` and give :meth:`become`."""

    kind: str

    def apply(self, changes: Sequence[Change]) -> None:
        """Make each change's ``after`` the state (its ``before`` is what runs now)."""
        for change in own(self, changes):
            self.become(change.after, change.before)

    def undo(self, changes: Sequence[Change]) -> None:
        """Make each change's ``before`` the state again."""
        for change in own(self, changes):
            self.become(change.before, change.after)

    def become(self, state: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> None:
        """Make ``state`` run (None: nothing), ``other`` being what may run now; idempotent."""
        raise NotImplementedError


class ChangeError(RuntimeError):
    """A change could not be planned or applied."""


def own(applier: Applier, changes: Sequence[Change]) -> Sequence[Change]:
    """``changes`` when every one is of ``applier.kind``; else a ChangeError naming the strays."""
    other = sorted({c.key for c in changes if c.kind != applier.kind})
    if other:
        raise ChangeError(f"{type(applier).__name__} makes only {applier.kind!r} changes, not {', '.join(other)}")
    return changes


class RolledBack(ChangeError):
    """A group failed; everything the phase had applied was undone."""


class NotAllowed(ChangeError):
    """The change needs a permission the parameters did not give (a restart, a host change)."""


class Journal:
    """The append-only record of what a phase changed, in ``<phase dir>/journal.jsonl``."""

    def __init__(self, phase_dir: Path) -> None:
        self.path = Path(phase_dir) / JOURNAL

    def write(self, event: str, change: Change, **extra: Any) -> None:
        entry = {"t": time.time(), "event": event, "key": change.key, "change": change.to_json(), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            out.flush()

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def outstanding(self) -> list[Change]:
        """Changes applied (or being applied) and not undone since, in the order they were first applied.

        A thing changed several times in a row (Phase 4's balancer, reloaded for each instance count) is one
        change: from the state before the first of them to the state after the last, in the place of the first, so
        that undoing goes back to where the phase found it, in the reverse order of how the phase built it.
        """
        first: dict[str, dict[str, Any]] = {}  # by key: the first entry since the key was last undone
        last: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            key = entry["key"]
            if entry["event"] == "undone":
                first.pop(key, None)
                last.pop(key, None)
                continue
            first.setdefault(key, entry)
            last[key] = entry
        return [replace(Change.from_json(last[key]["change"]), before=entry["change"]["before"])
                for key, entry in first.items()]  # fmt: skip


def plan_table(changes: Iterable[Change]) -> pd.DataFrame:
    """The plan for people: one row per change."""
    rows = [{"change": c.key, "now": c.before, "planned": c.after, "restart": c.restart, "host": c.host,
             "why": c.reason} for c in changes]  # fmt: skip
    import pandas as pd

    return pd.DataFrame(rows, columns=["change", "now", "planned", "restart", "host", "why"])


def apply(
    groups: Sequence[tuple[Applier, Sequence[Change]]],
    journal: Journal,
    *,
    on_group: Callable[[Applier, Sequence[Change]], None] | None = None,
) -> list[Change]:
    """Apply the groups in order; on a failure undo everything applied here, newest first.

    Raises:
        RolledBack: a group failed; the message names it, its error, and what was undone.
    """
    done: list[tuple[Applier, Sequence[Change]]] = []
    for applier, changes in groups:
        if not changes:
            continue
        for change in changes:
            journal.write("applying", change)
        done.append((applier, changes))
        try:
            applier.apply(changes)
        except Exception as exc:
            names = ", ".join(c.key for c in changes)
            try:
                undone = undo(done, journal)
            except Exception as undo_exc:
                raise ChangeError(
                    f"applying {names} failed ({type(exc).__name__}: {exc}), and undoing the phase failed too "
                    f"({type(undo_exc).__name__}: {undo_exc}). The journal {journal.path} keeps what is left: "
                    "fix the cause, then run `ragperf rollback <phase> --run <run-id>`."
                ) from exc
            raise RolledBack(
                f"applying {names} failed ({type(exc).__name__}: {exc}); rolled back {len(undone)} change(s): "
                + (", ".join(undone) or "none")
            ) from exc
        for change in changes:
            journal.write("applied", change)
        if on_group is not None:
            on_group(applier, changes)
    return [c for _, changes in done for c in changes]


def undo(done: Sequence[tuple[Applier, Sequence[Change]]], journal: Journal) -> list[str]:
    """Undo applied groups, newest first, journaling each change as undone; return their keys."""
    undone: list[str] = []
    for applier, changes in reversed(done):
        applier.undo(list(reversed(changes)))
        for change in changes:
            journal.write("undone", change)
            undone.append(change.key)
    return undone


def rollback(journal: Journal, appliers: Mapping[str, Applier]) -> list[str]:
    """Undo, newest first, every change the journal shows applied and not undone; return their keys."""
    outstanding = journal.outstanding()
    return undo(groups(outstanding, appliers), journal)


def groups(changes: Sequence[Change], appliers: Mapping[str, Applier]) -> list[tuple[Applier, list[Change]]]:
    """Consecutive changes grouped by their applier, in order, as :func:`apply` takes them."""
    missing = sorted({c.kind for c in changes} - set(appliers))
    if missing:
        raise ChangeError(f"no applier given for change kind(s) {', '.join(missing)}; given: {', '.join(appliers)}")
    result: list[tuple[Applier, list[Change]]] = []
    for change in changes:
        if result and result[-1][0] is appliers[change.kind]:
            result[-1][1].append(change)
        else:
            result.append((appliers[change.kind], [change]))
    return result
