"""ctrlens.models: the model interface, taps, building blocks and the reference-model base class.

The reference models themselves live in the top-level ``reference_models`` package
(``reference_models.build(name, schema)``); see ``docs/models.md``.
"""

from ctrlens.models.base import CTRModel, ModelConfig, bce_product, bce_with_logits, call_model

__all__ = ["CTRModel", "ModelConfig", "bce_product", "bce_with_logits", "call_model"]
