"""Layer-wise linear probes (see docs/probes.md).

:class:`ProbeSuite` fits one L2 logistic-regression probe per watched layer of a model on a sample of
one day (features streamed from forward hooks in the pass that computes the model's own outputs),
scores them on held-out rows and later days, flags layers that lose information, and returns a
``Result("probe")`` for the store. :class:`LinearProbe` is one probe with a scikit-learn style API.
"""

from ctrlens.probes.linear import LinearProbe, ProbeWarning, auc, logloss_from_logits
from ctrlens.probes.logistic import LogisticFit, SolverConfig, fit_logistic
from ctrlens.probes.suite import FINDING_COLUMNS, ProbeSuite, probe_days

__all__ = [
    "FINDING_COLUMNS",
    "LinearProbe",
    "LogisticFit",
    "ProbeSuite",
    "ProbeWarning",
    "SolverConfig",
    "auc",
    "fit_logistic",
    "logloss_from_logits",
    "probe_days",
]
