"""The ctrlens SQL store: every statistic, probe, saliency score, metric and alert per model x
checkpoint x day, in SQLite (embedded default) or PostgreSQL (teams). See docs/store.md.

    from ctrlens.store import Store
    store = Store("sqlite:///runs/ctrlens.sqlite", create=True)
    vid = store.register_model("din", checkpoint_hash, schema_hash, config)
    store.write_day(vid, "2026-01-05", "nightly", [field_stats, neuron_stats, quality, alerts])
    store.series("quality", "auc", model="din", head="ctr")
"""

from ctrlens.store.alerts import SEVERITIES, STATES as ALERT_STATES
from ctrlens.store.engine import DEFAULT_URL, display_url, normalize_url, resolve_url
from ctrlens.store.migrate import head_revision
from ctrlens.store.store import Lease, LeaseLost, LockHeld, StorageError, Store

__all__ = [
    "ALERT_STATES",
    "DEFAULT_URL",
    "Lease",
    "LeaseLost",
    "LockHeld",
    "SEVERITIES",
    "StorageError",
    "Store",
    "display_url",
    "head_revision",
    "normalize_url",
    "resolve_url",
]
