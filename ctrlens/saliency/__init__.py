"""Gradient saliency per feature field, with captum (see docs/saliency.md).

    import ctrlens.saliency as sal
    rep = sal.report(model, "data/world", day="2026-01-30", head="ctr")   # input_x_gradient, mean baseline
    rep.top(5); rep.compare(other_day_report); rep.to_html("saliency.html")
    print(sal.explain(model, "data/world", row=17, day="2026-01-30"))

One attribution method, one class (captum style): :class:`InputXGradient` (gradient x (input -
baseline); the default, with the analysed rows' mean embedding as baseline: :data:`DEFAULT_METHOD`),
:class:`Saliency` (|gradient|), :class:`IntegratedGradients`; all share
:class:`FieldAttribution`, which attributes a head's target to every field's embedding output
in one forward + one backward per batch.
"""

from ctrlens.saliency.base import FieldAttribution, FieldAttributions, mean_embeddings
from ctrlens.saliency.explain import Explanation, explain
from ctrlens.saliency.input_x_gradient import InputXGradient
from ctrlens.saliency.integrated_gradients import IntegratedGradients
from ctrlens.saliency.report import DEFAULT_BASELINE, DEFAULT_METHOD, METHODS, SaliencyReport, make_method, report
from ctrlens.saliency.saliency import Saliency

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_METHOD",
    "METHODS",
    "Explanation",
    "FieldAttribution",
    "FieldAttributions",
    "InputXGradient",
    "IntegratedGradients",
    "Saliency",
    "SaliencyReport",
    "explain",
    "make_method",
    "mean_embeddings",
    "report",
]
