"""Plotly figures of the dashboard: pure functions of the store's DataFrames, one module per page.

Nothing here touches the database or Dash, so every figure is unit-testable without a browser:
hand a frame in (the shape the store's query API returns), get a ``plotly.graph_objects.Figure``.
A few pure computations the views need live here too (reference bands, top movers, neuron shifts).

Speed (every callback has a 300 ms budget on a year of history): figures are collected as plain
dicts by :class:`_Plot` and validated once by ``go.Figure`` at the end -- plotly's incremental API
(``add_trace(row=...)``, ``add_vline``, ``make_subplots``, named templates) costs 5-30 ms per call.
Subplot grids come from ``make_subplots`` once per shape (cached). Large matrices go to the
browser as float32 typed arrays (plotly encodes numpy arrays as base64): a 512-neuron x 365-day
heat map is about 1 MB and serialises in milliseconds.
"""

from __future__ import annotations

from ctrlens.dashboard.figures.base import empty
from ctrlens.dashboard.figures.overview import health_matrix, quality_over_time, reference_band
from ctrlens.dashboard.figures.features import drift_heatmap, field_trends, movers_figure, saliency_area, top_movers
from ctrlens.dashboard.figures.neurons import bin_labels, embedding_health, layer_fractions, neuron_heatmap, neuron_histograms, projection
from ctrlens.dashboard.figures.probes import probe_by_layer, probe_decay, probe_trend
from ctrlens.dashboard.figures.compare import (compare_layers, compare_neuron_scatter, compare_probes, compare_saliency, layer_shift,
                                               neuron_shift, score_distribution)
from ctrlens.distances import psi

__all__ = [
    "bin_labels",
    "compare_layers",
    "compare_neuron_scatter",
    "compare_probes",
    "compare_saliency",
    "drift_heatmap",
    "embedding_health",
    "empty",
    "field_trends",
    "health_matrix",
    "layer_fractions",
    "layer_shift",
    "movers_figure",
    "neuron_heatmap",
    "neuron_histograms",
    "neuron_shift",
    "probe_by_layer",
    "probe_decay",
    "probe_trend",
    "projection",
    "psi",
    "quality_over_time",
    "reference_band",
    "saliency_area",
    "score_distribution",
    "top_movers",
]
