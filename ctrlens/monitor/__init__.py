"""The nightly diagnostic job: drift tests, diagnosis and daily reports (see docs/nightly.md).

    from ctrlens.monitor import load_config, run_nightly
    summary = run_nightly(load_config("nightly.yaml"), start="2026-01-08", end="2026-01-30")
    summary.exit_code, summary.new_alerts

* :mod:`~ctrlens.monitor.config` -- the YAML configuration (frozen dataclasses, clear errors);
* :mod:`~ctrlens.monitor.compute` -- every result of one model x day;
* :mod:`~ctrlens.monitor.drift` -- distances (PSI, Jensen-Shannon, Wasserstein) and calibrated bands;
* :mod:`~ctrlens.monitor.diagnosis` -- rules that turn drifts into ranked findings;
* :mod:`~ctrlens.monitor.report` -- the daily HTML + Markdown report;
* :mod:`~ctrlens.monitor.job` -- orchestration, locks, backfill, exit codes;
* :mod:`~ctrlens.monitor.fleet` -- many models in parallel worker processes (``--workers``).

Heavy imports (torch) happen inside the functions that need them.
"""

from ctrlens.monitor.config import ConfigError, ModelWatch, NightlyConfig, Reference, Rows, Thresholds, load_config, parse_config
from ctrlens.monitor.diagnosis import Context, attribute, diagnose
from ctrlens.monitor.drift import Band, DriftSuite, History, band, js, neuron_layer_test, psi, wasserstein_norm
from ctrlens.monitor.fleet import run_fleet
from ctrlens.monitor.job import EXIT_ALERTS, EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, JobSummary, NightlyJob, Outcome, run_nightly

__all__ = [
    "Band",
    "ConfigError",
    "Context",
    "DriftSuite",
    "EXIT_ALERTS",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "History",
    "JobSummary",
    "ModelWatch",
    "NightlyConfig",
    "NightlyJob",
    "Outcome",
    "Reference",
    "Rows",
    "Thresholds",
    "attribute",
    "band",
    "diagnose",
    "js",
    "load_config",
    "neuron_layer_test",
    "parse_config",
    "psi",
    "run_fleet",
    "run_nightly",
    "wasserstein_norm",
]
