"""URL query parameters: parsing, validation against the store's catalogue, and building links.

Every view's selection lives in its URL (``/neurons?model=din&day=2026-01-12&layer=mlp.1``), so a
link from an alert, a report or a colleague opens exactly that view. Parameters:

=========  =====================================================================================
model      a model name in the store
day        ``YYYY-MM-DD``, a day with results for the model (default: its latest)
layer      a layer of the model on that day
field      an input field
neuron     a neuron index of ``layer``
head       a model head (``ctr``, ``cvr`` ...)
alert      an alert id
compare    the other side of a comparison: ``YYYY-MM-DD`` (same model, another day),
           ``v<ID>`` (checkpoint ID on the same day) or ``v<ID>@YYYY-MM-DD``
version    pin the checkpoint of the main side (a model version id)
stat       the statistic a view shows (a neuron statistic, a drift statistic)
method     the saliency method
window     days of history shown: a number of days, or ``all``
=========  =====================================================================================

Syntax errors and values the store does not know raise :class:`ParamError` (an
:class:`~ctrlens.errors.InputError`) with a message for the page: what was wrong, what is
available. Unknown parameter names are ignored (the access token, tracking tags ...).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qsl, urlencode

from ctrlens.errors import InputError

NAMES = ("model", "day", "layer", "field", "neuron", "head", "alert", "compare", "version", "stat", "method", "window")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COMPARE = re.compile(r"^(?:v(?P<version>\d{1,9}))?(?:@?(?P<day>\d{4}-\d{2}-\d{2}))?$")
MAX_LEN = 200
DEFAULT_WINDOW = 90


class ParamError(InputError):
    """A URL parameter that cannot be used; the message is shown in the page."""


@dataclass(frozen=True)
class Compare:
    """The other side of a comparison: a version and/or a day (None: same as the main side)."""

    version: int | None = None
    day: str | None = None

    def text(self) -> str:
        v = f"v{self.version}" if self.version is not None else ""
        if v and self.day:
            return f"{v}@{self.day}"
        return v or (self.day or "")


@dataclass(frozen=True)
class Selection:
    """A validated selection (None: not given / not applicable)."""

    model: str | None = None
    day: str | None = None
    layer: str | None = None
    field: str | None = None
    neuron: int | None = None
    head: str | None = None
    alert: int | None = None
    compare: Compare | None = None
    version: int | None = None
    stat: str | None = None
    method: str | None = None
    window: int | None = DEFAULT_WINDOW  # None: all days

    def with_(self, **changes: Any) -> "Selection":
        return replace(self, **changes)

    def query(self, keep: Iterable[str] | None = None) -> str:
        """``?model=..&day=..`` of the set parameters (only those in ``keep`` if given)."""
        return to_query(self, keep)


def show(value: Any) -> str:
    """A value quoted for a message, cut short (never echo a whole pasted page)."""
    s = str(value)
    return repr(s if len(s) <= 60 else s[:57] + "...")


def listing(values: Sequence[Any], n: int = 12) -> str:
    """``a, b, c ... (40 in all)`` for messages."""
    vals = [str(v) for v in values]
    if not vals:
        return "(none)"
    head = ", ".join(vals[:n])
    return head + (f" ... ({len(vals)} in all)" if len(vals) > n else "")


def parse_query(search: str | None) -> dict[str, str]:
    """The known parameters of a query string (``?a=1&b=2``). Repeated names: the last wins."""
    text = (search or "").lstrip("?")
    if len(text) > 4 * MAX_LEN * len(NAMES):
        raise ParamError("The address is too long to be a dashboard link.")
    out: dict[str, str] = {}
    for k, v in parse_qsl(text, keep_blank_values=False):
        if k in NAMES:
            v = v.strip()
            if len(v) > MAX_LEN:
                raise ParamError(f"URL parameter {k} is too long ({len(v)} characters).")
            if v:
                out[k] = v
    return out


def parse_syntax(raw: dict[str, str]) -> Selection:
    """Check the form of each parameter (no database): days, integers, compare, window."""
    kw: dict[str, Any] = {k: raw[k] for k in ("model", "layer", "field", "head", "stat", "method") if k in raw}
    if "day" in raw:
        kw["day"] = parse_day(raw["day"], "day")
    for k in ("neuron", "alert", "version"):
        if k in raw:
            kw[k] = parse_int(raw[k], k)
    if "compare" in raw:
        kw["compare"] = parse_compare(raw["compare"])
    if "window" in raw:
        kw["window"] = parse_window(raw["window"])
    return Selection(**kw)


def parse_day(text: str, what: str = "day") -> str:
    import datetime as dt

    if not _DAY.match(text):
        raise ParamError(f"URL parameter {what}={show(text)} is not a date: expected YYYY-MM-DD, e.g. 2026-01-31.")
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise ParamError(f"URL parameter {what}={show(text)} is not a calendar date.") from None
    return text


def parse_int(text: str, what: str) -> int:
    if not re.fullmatch(r"\d{1,9}", text):
        raise ParamError(f"URL parameter {what}={show(text)} is not a number: expected a whole number such as 3.")
    return int(text)


def parse_compare(text: str) -> Compare:
    m = _COMPARE.match(text)
    if not m or not (m.group("version") or m.group("day")):
        raise ParamError(
            f"URL parameter compare={show(text)}: expected a day (2026-01-05), a checkpoint (v3) or both (v3@2026-01-05)."
        )
    day = parse_day(m.group("day"), "compare") if m.group("day") else None
    return Compare(int(m.group("version")) if m.group("version") else None, day)


def parse_window(text: str) -> int | None:
    if text == "all":
        return None
    if not re.fullmatch(r"\d{1,5}", text) or int(text) < 1:
        raise ParamError(f"URL parameter window={show(text)}: expected a number of days (e.g. 90) or 'all'.")
    return int(text)


def to_query(sel: Selection | dict[str, Any], keep: Iterable[str] | None = None) -> str:
    """A query string (with ``?``, or ``""``) for a selection or a dict of parameters."""
    d = asdict(sel) if isinstance(sel, Selection) else dict(sel)
    if isinstance(sel, Selection):
        d["compare"] = sel.compare.text() if sel.compare else None
        d["window"] = ("all" if sel.window is None else sel.window) if sel.window != DEFAULT_WINDOW else None
    keep = set(NAMES if keep is None else keep)
    items = []
    for k in NAMES:
        v = d.get(k)
        if k in keep and v is not None and v != "":
            items.append((k, v.text() if isinstance(v, Compare) else str(v)))
    return ("?" + urlencode(items)) if items else ""


def check_choice(value: str | None, choices: Sequence[str], what: str, where: str = "") -> str | None:
    """``value`` if it is one of ``choices`` (None stays None); else a ParamError naming them."""
    if value is None or value in choices:
        return value
    where = f" {where}" if where else ""
    raise ParamError(f"Unknown {what} {show(value)}{where}. Available: {listing(choices)}.")


def check_day(day: str | None, days: Sequence[str], who: str) -> str | None:
    """``day`` if ``who`` (e.g. "model 'din'") has results on it (None stays None); else a ParamError."""
    if day is None or day in days:
        return day
    if not days:
        raise ParamError(f"No results for {who} yet.")
    span = f"{days[0]} .. {days[-1]}" if len(days) > 1 else days[0]
    raise ParamError(f"No results for {who} on {day}. Days with results: {span} ({len(days)} days).")


__all__ = [
    "Compare",
    "DEFAULT_WINDOW",
    "NAMES",
    "ParamError",
    "Selection",
    "check_choice",
    "check_day",
    "listing",
    "parse_compare",
    "parse_query",
    "parse_syntax",
    "show",
    "to_query",
]
