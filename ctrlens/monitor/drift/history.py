"""The reference days a drift test compares today with (:class:`History`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ctrlens.results import COLUMNS

HISTORY_KINDS = ("field_stats", "quality", "saliency", "probe", "layer_stats", "embedding_health", "neuron_stats", "drift")


@dataclass
class History:
    """The reference days as long frames (``day``, ``version_id`` and the result columns), as
    :meth:`ctrlens.store.Store.series` returns them.

    Attributes:
        days: the reference days, ascending.
        label: how they were chosen, for the ``method`` text (``"trailing 7d"``).
        scheme: ``"prequential"`` (trailing window) or ``"loo"`` (fixed window).
        frames: result kind -> long frame of the reference days (``neuron_stats``: only days of
            today's model version, whose histograms share today's edges).
        recent: drift rows of the days just before today (``day`` + drift columns), for persistence.
        versions: reference day -> model version id.
        today: the day tested (``None``: unknown; calendar statistics then keep the plain band).
    """

    days: list[str] = field(default_factory=list)
    label: str = "no reference"
    scheme: str = "prequential"
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    recent: pd.DataFrame = field(default_factory=pd.DataFrame)
    versions: dict[str, int] = field(default_factory=dict)
    today: str | None = None

    def frame(self, kind: str) -> pd.DataFrame:
        f = self.frames.get(kind)
        return f if f is not None else pd.DataFrame(columns=["day", *COLUMNS.get(kind, {})])

    def alerted(self) -> set[tuple[str, str, str]]:
        """``(day, subject_kind, subject)`` of reference days on which that subject alerted."""
        d = self.frame("drift")
        if d.empty or "alert" not in d:
            return set()
        a = d[d["alert"].fillna(False).astype(bool)]
        return set(zip(a["day"], a["subject_kind"], a["subject"]))
