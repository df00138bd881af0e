"""Drift tests of the model side: quality, saliency and importance, probes, layers, neurons, embeddings.

Checkpoint-dependent: on a day served by a new checkpoint the job runs them twice (as served and
back-tested) and :func:`ctrlens.monitor.drift.suite.both_axes` combines the two.
"""

from __future__ import annotations

import math

import numpy as np

from ctrlens.monitor.drift.bands import auc_se, binom_sd, neuron_layer_test
from ctrlens.monitor.drift.core import SuiteCore, eq, log_safe
from ctrlens.distances import psi
from ctrlens.results import Result


class ModelTests(SuiteCore):
    """``quality``, ``saliency``, ``probes``, ``layers`` and ``embeddings``."""

    def quality(self, today: Result | None) -> None:
        """Model quality per head: AUC, calibration, mean pCTR, normalised-score distribution."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            h = r.head
            m = eq("head", h)
            self.add("quality", h, "auc", r.auc, self.ref_values("quality", "quality", h, m, "auc"),
                     floor=max(self.floor("auc"), auc_se(r.auc, r.positives, r.rows - r.positives)))
            # the click count is Poisson: calibration (sum pCTR / clicks) carries a relative noise 1/sqrt(clicks)
            cal_noise = abs(r.calibration) / math.sqrt(r.positives) if r.positives and np.isfinite(r.calibration) else 0.0
            days, vals = self.ref_series("quality", "quality", h, m, "calibration")
            self.add("quality", h, "calibration", r.calibration, vals, floor=max(self.floor("calibration"), cal_noise), ref_days=days)
            days, vals = self.ref_series("quality", "quality", h, m, "mean_pred", log_safe)
            self.add("quality", h, "log_mean_pred", log_safe(r.mean_pred), vals, ref_days=days)
            sh = r.score_hist_json if isinstance(r.score_hist_json, dict) else {}
            if sh.get("counts"):
                refs = self.ref_hists("quality", "quality", h, m, "score_hist_json", edges=sh.get("edges"))
                self.add_distance("quality", h, "score_psi", sh["counts"], refs, psi)

    def saliency(self, today: Result | None) -> None:
        """Saliency share per head and field (gradient rows) and permutation importance (``permutation`` rows)."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            subj = f"{r.head}/{r.field}"
            m = lambda f, h=r.head, fl=r.field, me=r.method: (f["head"] == h) & (f["field"] == fl) & (f["method"] == me)  # noqa: E731
            if r.method == "permutation":
                self.add("importance", subj, "importance", r.mean, self.ref_values("saliency", "importance", subj, m, "mean"))
            else:
                self.add("saliency", subj, "share", r.share, self.ref_values("saliency", "saliency", subj, m, "share"))

    def probes(self, today: Result | None, day: str, rates: dict[str, float] | None = None) -> None:
        """Probe AUC per head and layer on the day's held-out rows (``logit.*`` pseudo-layers are the
        model's own AUC, tested with the quality metrics). ``rates``: head -> positive rate, for the
        AUC's sampling-noise floor."""
        if today is None:
            return
        f = today.frame
        for r in f[f["eval_day"] == day].itertuples(index=False):
            if str(r.layer).startswith("logit."):
                continue
            subj = f"{r.head}/{r.layer}"
            m = lambda fr, h=r.head, la=r.layer: (fr["head"] == h) & (fr["layer"] == la) & (fr["eval_day"] == fr["day"])  # noqa: E731
            rate = (rates or {}).get(r.head, float("nan"))
            pos = r.n_eval * rate if np.isfinite(rate) else float("nan")
            self.add("probe", subj, "probe_auc", r.auc, self.ref_values("probe", "probe", subj, m, "auc"),
                     floor=max(self.floor("probe_auc"), auc_se(r.auc, pos, r.n_eval - pos)))

    def layers(self, layer_stats: Result | None, neuron_stats: Result | None) -> None:
        """Layer summaries (any version: a new checkpoint's dead units show here) and neuron histograms
        (same version only), with false-discovery control across the layer's neurons."""
        if layer_stats is not None:
            for r in layer_stats.frame.itertuples(index=False):
                la = r.layer
                m = eq("layer", la)
                nfloor = 1.0 / max(int(r.n_neurons), 1)
                self.add("layer", la, "dead_fraction", r.dead_fraction, self.ref_values("layer_stats", "layer", la, m, "dead_fraction"),
                         floor=max(self.floor("dead_fraction"), nfloor))
                if np.isfinite(r.saturated_fraction):
                    self.add("layer", la, "saturated_fraction", r.saturated_fraction,
                             self.ref_values("layer_stats", "layer", la, m, "saturated_fraction"),
                             floor=max(self.floor("saturated_fraction"), nfloor))
                self.add("layer", la, "log_mean_abs", log_safe(r.mean_abs), self.ref_values("layer_stats", "layer", la, m, "mean_abs", log_safe))
        if neuron_stats is None or neuron_stats.frame.empty:
            return
        ref = self.h.frame("neuron_stats")
        for la, g in neuron_stats.frame.groupby("layer", sort=False):
            g = g.sort_values("neuron")
            today = np.asarray([np.asarray(h, dtype=np.float64) for h in g["hist_json"]])
            if today.ndim != 2 or today.shape[1] < 2:
                continue
            days = self._usable("layer", la, self.h.days)
            stack = []
            if not ref.empty:
                rl = ref[(ref["layer"] == la) & ref["day"].isin(days)]
                for _, gd in rl.groupby("day", sort=True):
                    gd = gd.sort_values("neuron")
                    arr = np.asarray([np.asarray(h, dtype=np.float64) for h in gd["hist_json"]])
                    if arr.shape == today.shape:
                        stack.append(arr)
            if len(stack) < max(self.min_days, 3):
                self.add("layer", la, "neuron_drift_share", float("nan"), [])
                continue
            res = neuron_layer_test(today, np.stack(stack), k=self.t.neuron_k, fraction=self.t.neuron_fraction,
                                    floor=self.floor("psi"), rel_floor=self.t.rel_floor, layer_k=self.t.k)
            self.neurons[la] = res
            key = ("layer", la, "neuron_drift_share")
            sev = (res["share"] - res["reference_share"]) / max(res["layer_threshold"] - res["reference_share"], 1e-9)
            alert = res["alert"] and self._persistent(key, sev)
            self.rows.append({
                "subject_kind": "layer", "subject": la, "statistic": "neuron_drift_share",
                "method": f"share of neurons with PSI above their own mean+-{self.t.neuron_k:g}sd band; layer band "
                          f"mean+max({self.t.k:g}sd, {self.t.neuron_fraction:g}) ({self.h.label}, n={len(stack)})",
                "value": res["share"], "reference": res["reference_share"], "threshold": res["layer_threshold"],
                "direction": "above", "alert": bool(alert), "severity": float(sev) if res["alert"] else 0.0,
            })  # fmt: skip
            # per-neuron rows only for the neurons that moved (thousands of quiet neurons stay out of the store)
            for i in np.flatnonzero(res["moving"]):
                self.rows.append({
                    "subject_kind": "neuron", "subject": f"{la}/{int(g['neuron'].iloc[i])}", "statistic": "psi",
                    "method": f"own band mean+-{self.t.neuron_k:g}sd; alerts only with its layer ({self.h.label})",
                    "value": float(res["psi"][i]), "reference": float("nan"), "threshold": float(res["threshold"][i]),
                    "direction": "above", "alert": bool(alert), "severity": 0.0,
                })  # fmt: skip

    def embeddings(self, today: Result | None) -> None:
        """Embedding tables: effective rank and mean row norm (they move with checkpoints)."""
        if today is None:
            return
        for r in today.frame.itertuples(index=False):
            m = eq("table", r.table)
            self.add("embedding", r.table, "log_effective_rank", log_safe(r.effective_rank),
                     self.ref_values("embedding_health", "embedding", r.table, m, "effective_rank", log_safe))
            self.add("embedding", r.table, "log_norm_mean", log_safe(r.norm_mean),
                     self.ref_values("embedding_health", "embedding", r.table, m, "norm_mean", log_safe))
            if np.isfinite(r.never_updated_frac):  # needs the step-0 checkpoint next to the model's
                self.add("embedding", r.table, "never_updated_frac", r.never_updated_frac,
                         self.ref_values("embedding_health", "embedding", r.table, m, "never_updated_frac"),
                         sides="above", floor=max(self.floor("never_updated_frac"), binom_sd(r.never_updated_frac, r.seen_rows)))
