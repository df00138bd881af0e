"""Incidents planted into a synthetic world on chosen days and fields.

Two families, on purpose:

* **input corruptions** (``stuck_value``, ``shuffled``, ``missing_spike``, ``oov_surge``,
  ``blank_images``) change only what is *logged* for that day -- the features a model sees -- while the
  labels still come from the true, uncorrupted world. That is what a production pipeline bug looks like.
* **world changes** (``distribution_shift``, ``ctr_level_shift``, ``position_bias_change``) change the
  world itself on that day; the labels follow.

``magnitude`` means something per kind (see :data:`INCIDENT_KINDS` and docs/synthetic-world.md);
``None`` takes the kind's default, and the incident log records the value used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal

from ctrlens.errors import InputError

#: Fields of the synthetic world by kind (the schema built by :mod:`ctrlens.synth.writer`).
INT_FIELDS = ("user_id", "item_id", "category_id", "shop_id", "user_age_bucket", "user_gender", "hour")
DENSE_FIELDS = ("price",)
SEQ_FIELDS = ("hist_item_id", "hist_category_id")
POSITION_FIELDS = ("position",)
IMAGE_FIELDS = ("item_image", "hist_image")
BAG_FIELDS = ("item_tags",)  # only in worlds made with item_tags > 0
ALL_FIELDS = INT_FIELDS + DENSE_FIELDS + SEQ_FIELDS + POSITION_FIELDS + IMAGE_FIELDS


@dataclass(frozen=True)
class KindSpec:
    """What an incident kind does, which fields it accepts and what its magnitude means."""

    effect: Literal["input", "world"]
    fields: tuple[str | None, ...]
    default: float
    low: float  # magnitude must be > low ...
    high: float  # ... and <= high
    meaning: str


_FRACTION = (0.0, 1.0)
INCIDENT_KINDS: dict[str, KindSpec] = {
    "stuck_value": KindSpec(
        "input", INT_FIELDS + DENSE_FIELDS + SEQ_FIELDS + BAG_FIELDS + POSITION_FIELDS, 1.0, *_FRACTION,
        "share of the day's rows whose logged value is replaced by one value (that of a random row)",
    ),
    "shuffled": KindSpec(
        "input", INT_FIELDS + DENSE_FIELDS + SEQ_FIELDS + BAG_FIELDS + POSITION_FIELDS, 1.0, *_FRACTION,
        "share of the day's rows whose logged value is permuted among themselves (a join bug)",
    ),
    "missing_spike": KindSpec(
        "input", INT_FIELDS + DENSE_FIELDS + SEQ_FIELDS + BAG_FIELDS, 0.5, *_FRACTION,
        "share of the day's rows logged as null",
    ),
    "oov_surge": KindSpec(
        "input", INT_FIELDS + SEQ_FIELDS + BAG_FIELDS, 0.3, *_FRACTION,
        "share of the day's ids (rows, or history / tag entries) replaced by ids >= vocab_size",
    ),
    "blank_images": KindSpec(
        "input", (None,) + IMAGE_FIELDS, 1.0, *_FRACTION,
        "share of the items shown that day (candidates for item_image, history for hist_image, both for "
        "no field) whose image is blank (all-zero) in the day's override table day=D/_images.parquet",
    ),
    "distribution_shift": KindSpec(
        "world",
        ("price", "category_id", "item_id", "shop_id", "hour", "user_id", "user_age_bucket", "user_gender",
         "hist_item_id", "hist_category_id", "position"),
        0.5, -1.0, 100.0,
        "price: all prices multiplied by (1 + magnitude); other fields: share of rows drawn from a shifted "
        "distribution (see docs/synthetic-world.md), must be in (0, 1]",
    ),
    "ctr_level_shift": KindSpec(
        "world", (None,), 0.7, -20.0, 20.0, "added to the true click logit of every impression (a holiday)"
    ),
    "position_bias_change": KindSpec(
        "world", (None, "position"), 1.0, -1.0, 20.0,
        "the examination exponent eta becomes eta * (1 + magnitude)",
    ),
}


@dataclass(frozen=True)
class Incident:
    """An incident on day index ``day`` (0 = the world's start date) of ``kind`` on ``field``."""

    day: int
    kind: str
    field: str | None = None
    magnitude: float | None = None

    @property
    def spec(self) -> KindSpec:
        return INCIDENT_KINDS[self.kind]

    @property
    def effect(self) -> str:
        return self.spec.effect

    @property
    def value(self) -> float:
        """The magnitude used (the kind's default when none was given)."""
        return self.spec.default if self.magnitude is None else float(self.magnitude)

    def resolved(self) -> "Incident":
        return replace(self, magnitude=self.value, field=self.field)

    @classmethod
    def parse(cls, spec: str, *, start: str | None = None) -> "Incident":
        """Parse ``DAY:KIND[:FIELD][:MAGNITUDE]``.

        ``DAY`` is a day index (0 = first day) or a date ``YYYY-MM-DD`` (needs ``start``). For kinds that
        take no field the third part may be the magnitude (``12:ctr_level_shift:0.8``) or empty
        (``12:ctr_level_shift::0.8``).
        """
        parts = spec.split(":")
        if len(parts) < 2 or len(parts) > 4 or not parts[0] or not parts[1]:
            raise InputError(
                f"incident {spec!r}: expected DAY:KIND[:FIELD][:MAGNITUDE], e.g. 12:stuck_value:category_id or 5:ctr_level_shift:0.8"
            )
        day_s, kind = parts[0].strip(), parts[1].strip()
        if kind not in INCIDENT_KINDS:
            raise InputError(f"incident {spec!r}: unknown kind {kind!r}; kinds are {', '.join(INCIDENT_KINDS)}")
        try:
            day = int(day_s)
        except ValueError:
            try:
                date = dt.date.fromisoformat(day_s)
            except ValueError:
                raise InputError(f"incident {spec!r}: day {day_s!r} is neither a day index nor a date YYYY-MM-DD") from None
            if start is None:
                raise InputError(f"incident {spec!r}: a date as day needs the world's start date")
            day = (date - dt.date.fromisoformat(start)).days
        rest = [p.strip() for p in parts[2:]]
        field: str | None = None
        mag_s: str | None = None
        if len(rest) == 2:
            field, mag_s = rest[0] or None, rest[1] or None
        elif len(rest) == 1 and rest[0]:
            if INCIDENT_KINDS[kind].fields == (None,) or (_is_number(rest[0]) and None in INCIDENT_KINDS[kind].fields):
                mag_s = rest[0]  # a kind without field: the third part can only be the magnitude
            else:
                field = rest[0]
        magnitude = None
        if mag_s is not None:
            if not _is_number(mag_s):
                takes = "" if INCIDENT_KINDS[kind].fields != (None,) else f" ({kind} takes no field)"
                raise InputError(f"incident {spec!r}: magnitude {mag_s!r} is not a number{takes}")
            magnitude = float(mag_s)
        return cls(day=day, kind=kind, field=field, magnitude=magnitude)

    def to_dict(self, start: str | None = None) -> dict:
        d = {"day": self.day, "kind": self.kind, "field": self.field, "magnitude": self.value, "effect": self.effect}
        if start is not None:
            d["date"] = (dt.date.fromisoformat(start) + dt.timedelta(days=self.day)).isoformat()
        return d


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def validate_incidents(incidents, days: int, *, tags: bool = False) -> tuple[Incident, ...]:
    """Check every incident against the world (kinds, fields, day range, magnitude); resolve defaults.

    Accepts :class:`Incident` objects or ``DAY:KIND[:FIELD][:MAGNITUDE]`` strings. ``tags``: the world
    has the opt-in bag field ``item_tags``.
    """
    out: list[Incident] = []
    for inc in incidents:
        if isinstance(inc, str):
            inc = Incident.parse(inc)
        if not isinstance(inc, Incident):
            raise InputError(f"incident {inc!r}: expected an Incident or a 'DAY:KIND[:FIELD][:MAGNITUDE]' string")
        where = f"incident {inc.day}:{inc.kind}:{inc.field}"
        if inc.kind not in INCIDENT_KINDS:
            raise InputError(f"{where}: unknown kind {inc.kind!r}; kinds are {', '.join(INCIDENT_KINDS)}")
        spec = INCIDENT_KINDS[inc.kind]
        if not isinstance(inc.day, int) or isinstance(inc.day, bool) or not 0 <= inc.day < days:
            raise InputError(f"{where}: day {inc.day!r} is out of range; the world has days 0..{days - 1}")
        if inc.field in BAG_FIELDS and not tags:
            raise InputError(f"{where}: field {inc.field!r} exists only in worlds made with item_tags > 0")
        if inc.field not in spec.fields:
            allowed = ", ".join("(none)" if f is None else f for f in spec.fields)
            known = "" if inc.field is None or inc.field in ALL_FIELDS + BAG_FIELDS else f" (no such field; fields are {', '.join(ALL_FIELDS)})"
            raise InputError(f"{where}: field {inc.field!r} is not allowed for {inc.kind}{known}; allowed: {allowed}")
        v = inc.value
        high = spec.high
        if inc.kind == "distribution_shift" and inc.field != "price":
            high = 1.0
        low = 0.0 if inc.kind == "distribution_shift" and inc.field != "price" else spec.low
        if not (low < v <= high):
            raise InputError(f"{where}: magnitude {v} must be in ({low}, {high}]: {spec.meaning}")
        out.append(inc.resolved())
    return tuple(out)


# -- input corruptions of one day's logged columns ------------------------------------------------
def corrupt(columns: dict, inc: Incident, rng, vocab: dict[str, int]) -> dict:
    """Apply input corruption ``inc`` to the day's logged arrow columns in place; return details for the log.

    ``columns`` maps field name -> ``pyarrow.Array`` (list arrays for sequences). Labels are not
    touched: they were drawn from the true inputs before logging.
    """
    import numpy as np
    import pyarrow as pa

    arr = columns[inc.field]
    n = len(arr)
    m = inc.value
    rows = np.flatnonzero(rng.random(n) < m) if m < 1.0 else np.arange(n)
    idx = np.arange(n)
    details: dict = {"rows": int(rows.size)}
    if inc.kind == "stuck_value":
        pool = np.arange(n)
        if pa.types.is_list(arr.type):  # a stuck history is one real (non-empty) history everywhere
            nonempty = np.flatnonzero(np.diff(arr.offsets.to_numpy()) > 0)
            pool = nonempty if nonempty.size else pool
        r0 = int(pool[rng.integers(0, pool.size)])
        idx[rows] = r0
        columns[inc.field] = arr.take(pa.array(idx))
        details["value"] = arr[r0].as_py()
    elif inc.kind == "shuffled":
        idx[rows] = rows[rng.permutation(rows.size)]
        columns[inc.field] = arr.take(pa.array(idx))
    elif inc.kind == "missing_spike":
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        columns[inc.field] = arr.take(pa.array(idx, mask=mask))
    elif inc.kind == "oov_surge":
        v = vocab[inc.field]
        nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None  # keep earlier nulls
        if pa.types.is_list(arr.type):
            arr = arr.take(pa.array(idx))  # offsets from 0, values exactly the listed entries
            values = arr.values.to_numpy().copy()
            hit = rng.random(values.size) < m
            values[hit] = v + rng.integers(0, max(v, 1), int(hit.sum()))
            columns[inc.field] = pa.ListArray.from_arrays(
                arr.offsets, pa.array(values, pa.int64()), mask=None if nulls is None else pa.array(nulls)
            )
            details["rows"] = None
            details["entries"] = int(hit.sum())
        else:
            values = arr.fill_null(0).to_numpy().copy()
            values[rows] = v + rng.integers(0, max(v, 1), rows.size)
            columns[inc.field] = pa.array(values, pa.int64(), mask=nulls)
        details["vocab_size"] = v
    else:  # pragma: no cover - validate_incidents only lets input kinds through here
        raise ValueError(inc.kind)
    return details
