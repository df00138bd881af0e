"""From drift rows to findings: rules that name the likely cause first.

A drift test says *what* moved; the diagnosis combines the day's moved statistics into
**findings**, each with a subject (a field, layer, head or ``position``), a severity, the evidence
numbers with links into the dashboard, and a suggested action -- ranked so that the root cause
comes before its symptoms. The rules (see ``docs/alerts.md`` for what each finding means):

=========================  =====================================================================  =====
finding                    fires when                                                             score
=========================  =====================================================================  =====
``image_pipeline_broken``  an image field's brightness / coverage moved, or an image field's      100+
                           importance or saliency collapsed
``broken_feature``         a field collapsed to (nearly) one value, lost its values (coverage),   100+
                           or -- with an unchanged distribution -- lost its importance (shuffled)
``oov_surge``              a field's out-of-vocabulary rate rose                                  95+
``dead_neurons``           a layer's dead / saturated share rose with a **new checkpoint**        90+
``overfitting``            a new checkpoint's train-vs-test neuron fluctuation or AUC gap is big  88+
``position_bias_change``   the observed CTR-by-position slope (or PAL's gap to its seen curve)    85+
``distribution_shift``     a field's distribution moved (PSI / JS / Wasserstein), not collapsed   80+
``new_items``              the item field's cardinality rose without OOV                          70+
``calibration_drift``      calibration, mean pCTR or the label rate moved (the pCTR/CTR score     60+
                           distribution joins as evidence)
``quality_drop``           a head's AUC fell; names the fields most likely responsible            50+
``saliency_shift``         a field's saliency share moved while its input did not                 40+
``probe_drop``             a layer's probe AUC fell (alone: pages at twice its threshold, or with  35+
                           a second layer of the head)
``neuron_drift``           more of a layer's neurons moved than on the reference days             30+
=========================  =====================================================================  =====

Within a finding, ``+`` is the (capped) severity of its strongest drift: how many thresholds away.
Symptoms explained by a root-cause finding of the same day are kept as ``info`` (recorded, not
paged). Everything here is pure: drift rows and context in, ``Result("alert")`` out. One module per family of
rules: :mod:`.data` (input fields, positions), :mod:`.causes` (named causes), :mod:`.model` (the
checkpoint and the layers), :mod:`.heads` (calibration, quality, attribution), :mod:`.rank` (one row per
finding, best first) and :mod:`.actions` (what to do).
"""

from __future__ import annotations

import pandas as pd

from ctrlens.monitor.diagnosis.actions import ACTIONS
from ctrlens.monitor.diagnosis.base import BASE_SCORE, PAGING, ROOT_FINDINGS, Context, Finding, link, with_severity
from ctrlens.monitor.diagnosis.causes import label_pipeline_findings, swap_findings
from ctrlens.monitor.diagnosis.data import anchor_findings, day_view, field_findings, position_findings, unseen_item_findings
from ctrlens.monitor.diagnosis.heads import attribute, head_findings
from ctrlens.monitor.diagnosis.model import checkpoint_change_findings, layer_findings, symptom_findings
from ctrlens.monitor.diagnosis.rank import demote_secondary, demote_to_checkpoint, ranked
from ctrlens.results import Result


def diagnose(drift: pd.DataFrame, ctx: Context) -> Result:
    """Findings of one model-day from its drift rows (with the ``severity`` column of
    :meth:`~ctrlens.monitor.drift.DriftSuite.frame`). Returns ``Result("alert")``, best first."""
    day = day_view(drift)
    a = day.a
    explained: set[str] = set()  # fields a finding has named: later rules leave them alone
    findings: list[Finding] = swap_findings(a, ctx, explained)
    findings += field_findings(day, ctx, explained)
    demote_secondary(findings)  # importance-only symptoms of another field's broken inputs
    findings += anchor_findings(day, ctx, explained)
    findings += unseen_item_findings(day, ctx, explained)
    findings += position_findings(day, ctx)
    # the model axis: the old and the new checkpoint on the same rows, then the layers against the reference
    findings += checkpoint_change_findings(day.d, a, ctx)
    demote_to_checkpoint(findings, ctx)  # importance-only field findings of a diverged new checkpoint
    findings += layer_findings(a, ctx, changed=bool(ctx.extra.get("checkpoint_change")))
    findings += label_pipeline_findings(a, ctx, findings)
    # a root cause explains the head's calibration only when it pages (an info finding is a symptom itself)
    root = [f for f in findings if f.finding in ROOT_FINDINGS and f.severity in PAGING]
    head, cal_heads = head_findings(a, day.d, day.quality_alerts, ctx, root)
    findings += head
    symptom_sev = "info" if (root or cal_heads or not day.quality_alerts.empty) else "warning"
    findings += symptom_findings(a, ctx, symptom_sev)
    return ranked(findings, ctx)


__all__ = ["ACTIONS", "BASE_SCORE", "Context", "PAGING", "ROOT_FINDINGS", "attribute", "diagnose", "link", "with_severity"]
