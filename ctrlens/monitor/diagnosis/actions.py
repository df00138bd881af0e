"""The action each finding suggests (shown with the alert, and in docs/alerts.md)."""

from __future__ import annotations

ACTIONS = {
    "broken_feature": "Check the pipeline that logs this field (joins, defaults, a stuck upstream value) for this day; "
    "until fixed, consider serving the previous model or a fallback value. Compare the field's top values with the "
    "reference days in the dashboard.",
    "image_pipeline_broken": "Check the image pipeline (CDN, decoder, image table refresh) for this day: blank or "
    "missing images reach the model. Compare image brightness and the image fields' saliency with the reference days.",
    "oov_surge": "New ids that the model's vocabulary does not know: check for an id re-mapping upstream, or retrain / "
    "extend the vocabulary if these are genuinely new entities.",
    "new_items": "Many ids the model saw rarely or never: expect weaker predictions for them until the next retrain; "
    "retrain sooner if the share keeps growing.",
    "distribution_shift": "The population changed (campaign, traffic source, season). If it is real, watch quality and "
    "calibration and retrain on recent days; if not, check the upstream source of this field.",
    "dead_neurons": "The new checkpoint has more dead (or saturated) units in this layer: check the learning rate, "
    "initialisation and input scaling of this training run; consider rolling back to the previous checkpoint.",
    "saturated_neurons": "The new checkpoint has more saturated units in this layer: check input scaling and the "
    "learning rate; consider rolling back to the previous checkpoint.",
    "overfitting": "The checkpoint behaves very differently on its training days and on new days: it is fitting its "
    "training data too closely. Use fewer epochs, more regularisation or more days; prefer an earlier checkpoint.",
    "position_bias_change": "Users examine positions differently (a layout or UI change?). Retrain the position "
    "(ProbSeen / position-bias) part on recent days; pCTR rankings may be biased until then.",
    "calibration_drift": "Predicted and observed CTR disagree more than usual (a CTR level shift, holiday or "
    "promotion?). Recalibrate (e.g. isotonic / Platt on recent days) or retrain; bids and ranking thresholds that use "
    "pCTR are affected.",
    "quality_drop": "Ranking quality fell. Look at the attributed fields first; if none is broken, the world moved "
    "away from the model: retrain on recent days.",
    "saliency_shift": "The model leans on this field differently than before without a change in the field itself: "
    "check whether the checkpoint changed or another field broke.",
    "probe_drop": "A layer carries less linearly readable signal than usual: look for dead or saturated units and "
    "for input fields that broke upstream of it.",
    "embedding_corruption": "Rows of this embedding table were re-initialised or overwritten in the new checkpoint "
    "(a bad partial restore, a sharded save that lost a shard, an id re-mapping applied to the weights): roll back to "
    "the previous checkpoint and check how the table is saved, restored and re-sized.",
    "exploding_activations": "The new checkpoint's activations in this layer are an order of magnitude larger than "
    "its predecessor's on the same rows: a training run that diverged (learning rate too high, no gradient clipping, "
    "bad input scaling). Roll back to the previous checkpoint and check the run's learning rate and loss curve.",
    "model_regression": "The new checkpoint ranks the same rows worse than the checkpoint it replaced: do not keep "
    "serving it; roll back and check the training run (learning rate, days, data of the run).",
    "fields_swapped": "Two columns were exchanged (or one was filled from another) upstream: check the join / "
    "column mapping that produced this day's rows (a schema change, a positional join). Until fixed, the model sees "
    "one field's values as another's: consider serving a fallback.",
    "unit_change": "The field's values arrive in another unit or scale (cents vs euros, ms vs s, a missing "
    "normalisation): fix the conversion upstream or rescale the input; the model's learned weights assume the old scale.",
    "sequence_truncated": "Behaviour histories arrive shorter than usual: check the upstream length cap, the "
    "history store's retention and the join window for this day.",
    "label_pipeline": "Labels fell while inputs and the model did not change: check the label pipeline first (late or "
    "missing click / conversion logs, the join window of labels to impressions). If labels are complete, users "
    "really behave differently: recalibrate. Do not train on these days until the labels are confirmed.",
    "gradual_drift": "A slow trend: the field moved away from the anchor period a little every day, so the trailing "
    "reference followed it. If it is a real change of the population, retrain on recent days; if not, find the "
    "upstream change that started it (the dashboard's drift view shows when).",
    "checkpoint_change": "Informational: what changed between the previous and the new checkpoint on the same rows.",
    "neuron_drift": "Many neurons of this layer see different inputs than on the reference days; usually a symptom of "
    "an input change -- look at the input fields.",
}
