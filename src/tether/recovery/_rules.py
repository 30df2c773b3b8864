"""Classification by ordered rule packs: plain data that users extend or replace.

A :class:`Rule` says "an exception that looks like *this* is of *that* class, and the server's wait
is read from *there*". A pack is a tuple of rules; :func:`classify` tries the packs in order and the
first rule that answers wins. Nothing here imports a Telegram library: rules match class names
anywhere in the exception's MRO and read attributes, so exceptions of Telethon, Pyrogram, aiogram
and python-telegram-bot are recognised whether or not those libraries are installed.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Sequence

from .._classify import DEFAULT_AUTH_CODES, LinkClassifier, decision_for_link, parse_retry_after
from .._decision import Classification, Decision, ErrorClass

__all__ = ["Rule", "RulePack", "classify", "link_classifier", "read_seconds", "class_names"]

#: A full classifier a rule may delegate to: ``(exc, now) -> Classification | None``.
ClassifyFn = Callable[[BaseException, float], "Classification | None"]


def class_names(exc: BaseException) -> frozenset[str]:
    """Names of every class in the exception's MRO (so subclasses match their parents' rules)."""
    return _mro_names(type(exc))


@functools.lru_cache(maxsize=1024)
def _mro_names(kind: type) -> frozenset[str]:
    return frozenset(k.__name__ for k in kind.__mro__)


def read_seconds(value: Any, *, now: float) -> float | None:
    """A wait in seconds from an int, float, ``timedelta`` or Retry-After string; None if unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str):
        return parse_retry_after(value, now=now)
    return None


def _first_int(exc: BaseException, names: Sequence[str]) -> int | None:
    for name in names:
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@dataclass(frozen=True, slots=True)
class Rule:
    """One classification rule. Every condition given must hold for the rule to match.

    Attributes:
        error_class: the class to answer with (ignored when ``classify`` is given).
        names: class names; matches when any of them is in the exception's MRO.
        match: an extra predicate ``exc -> bool``.
        attrs: attribute values that must be equal (or, for a tuple/set/frozenset, be a member).
        retry_after: attribute names to read the server's wait from, tried in order (ints, floats,
            ``timedelta`` and Retry-After strings are understood), or a function ``(exc, now) -> seconds``.
        classify: delegate to a full classifier ``(exc, now) -> Classification | None`` (None: no match).
        reason: text for the classification (default: ``"ClassName: message"``).
        code_attrs: attributes holding a numeric code (RPC code, status), reported in ``Classification.code``.
    """

    error_class: ErrorClass = ErrorClass.UNKNOWN
    names: frozenset[str] = frozenset()
    match: Callable[[BaseException], bool] | None = None
    attrs: tuple[tuple[str, Any], ...] = ()
    retry_after: tuple[str, ...] | Callable[[BaseException, float], float | None] = ()
    classify: ClassifyFn | None = None
    reason: str | None = None
    code_attrs: tuple[str, ...] = ("code", "CODE", "error_code")

    def __post_init__(self) -> None:
        # accept friendly forms (a list of names, a dict of attrs, a single attribute name)
        if not isinstance(self.names, frozenset):
            object.__setattr__(self, "names", frozenset([self.names] if isinstance(self.names, str) else self.names))
        if isinstance(self.attrs, dict):
            object.__setattr__(self, "attrs", tuple(self.attrs.items()))
        if isinstance(self.retry_after, str):
            object.__setattr__(self, "retry_after", (self.retry_after,))

    def matches(self, exc: BaseException) -> bool:
        """Whether the name, attribute and predicate conditions hold (``classify`` is not consulted)."""
        if self.names and not (self.names & class_names(exc)):
            return False
        for name, expected in self.attrs:
            value = getattr(exc, name, _MISSING)
            if isinstance(expected, (tuple, set, frozenset)):
                if value not in expected:
                    return False
            elif value != expected:
                return False
        if self.match is not None:
            try:
                return bool(self.match(exc))
            except Exception:  # a broken user predicate must not break error handling
                return False
        return True

    def apply(self, exc: BaseException, now: float) -> Classification | None:
        """The classification this rule gives ``exc``, or None when it does not match."""
        if not self.matches(exc):
            return None
        if self.classify is not None:
            return self.classify(exc, now)
        wait: float | None = None
        if callable(self.retry_after):
            wait = self.retry_after(exc, now)
        else:
            for name in self.retry_after:
                wait = read_seconds(getattr(exc, name, None), now=now)
                if wait is not None:
                    break
        reason = self.reason or describe(exc)
        return Classification(self.error_class, reason, retry_after=wait, code=_first_int(exc, self.code_attrs))


_MISSING = object()

#: A rule pack: an ordered tuple of rules.
RulePack = tuple[Rule, ...]


def describe(exc: BaseException) -> str:
    """``"ClassName: message"`` (message trimmed to 200 characters)."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


def _run_packs(exc: BaseException, packs: Iterable[Iterable[Rule]], now: float) -> Classification | None:
    for pack in packs:
        for rule in pack:
            found = rule.apply(exc, now)
            if found is not None:
                return found
    return None


def classify(
    exc: BaseException,
    *,
    packs: Sequence[Iterable[Rule]] | None = None,
    now: float | None = None,
) -> Classification:
    """Classify any exception with ordered rule packs; the first matching rule wins.

    When nothing matches the exception itself, its ``__cause__`` (or, unless suppressed, its
    ``__context__``) is tried, one level deep: ``raise SendFailed() from FloodWait(...)`` is a flood wait.

    Args:
        exc: the exception to classify.
        packs: the rule packs, in order (default :data:`DEFAULT_PACKS`); extend with
            ``packs=[my_pack, *DEFAULT_PACKS]``.
        now: wall-clock epoch seconds for HTTP-date ``Retry-After`` values (default: ``time.time()``).

    Returns:
        A :class:`tether.Classification`; ``ErrorClass.UNKNOWN`` when no rule matches.
    """
    if packs is None:
        from ._packs import DEFAULT_PACKS

        packs = DEFAULT_PACKS
    at = time.time() if now is None else now
    found = _run_packs(exc, packs, at)
    if found is not None:
        return found
    inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if inner is not None and inner is not exc:
        found = _run_packs(inner, packs, at)
        if found is not None:
            return Classification(
                found.error_class,
                f"{describe(exc)} (caused by {found.reason})",
                retry_after=found.retry_after,
                code=found.code,
                reset_backoff=found.reset_backoff,
            )
    return Classification(ErrorClass.UNKNOWN, describe(exc))


def link_classifier(
    *,
    packs: Sequence[Iterable[Rule]] | None = None,
    auth_codes: Iterable[int] = DEFAULT_AUTH_CODES,
    reconnect_on_normal_close: bool = True,
    now: Callable[[], float] | None = None,
) -> LinkClassifier:
    """A Link classifier built on the rule packs: same decisions as ``tether.default_link_classifier``.

    Args:
        packs: rule packs (default: :data:`DEFAULT_PACKS` with ``auth_codes`` applied to the websockets pack).
        auth_codes: application close codes that mean "credentials refused".
        reconnect_on_normal_close: a peer's close 1000 reconnects (True) or is final (False).
        now: wall-clock source for HTTP-date ``Retry-After`` (default ``time.time``).
    """
    if packs is None:
        from ._packs import default_packs

        packs = default_packs(auth_codes=auth_codes)
    chosen = tuple(tuple(p) for p in packs)
    wall = now or time.time

    def classifier(exc: BaseException) -> Decision:
        c = classify(exc, packs=chosen, now=wall())
        return decision_for_link(c, reconnect_on_normal_close=reconnect_on_normal_close)

    return classifier

