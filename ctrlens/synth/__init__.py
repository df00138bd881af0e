"""A synthetic CTR world with a known ground truth and planted incidents (docs/synthetic-world.md).

    >>> from ctrlens.synth import generate, Incident
    >>> world = generate("out/world", days=30, rows_per_day=50_000, seed=1,
    ...                  incidents=[Incident(12, "stuck_value", "category_id")])
    >>> world.ground_truth["importance_rank"]["click"][:3]
"""

from ctrlens.synth.config import Weights, WorldConfig
from ctrlens.synth.incidents import INCIDENT_KINDS, Incident, validate_incidents
from ctrlens.synth.writer import SynthWorld, build_schema, generate

__all__ = ["INCIDENT_KINDS", "Incident", "SynthWorld", "Weights", "WorldConfig", "build_schema", "generate", "validate_incidents"]
