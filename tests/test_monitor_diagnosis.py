"""Diagnosis rules on hand-made drift rows: the root cause first, symptoms kept as info."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ctrlens.monitor.diagnosis import Context, attribute, diagnose, link, with_severity


def row(kind: str, subject: str, stat: str, value: float, ref: float, thr: float, alert: bool = True, sev: float | None = None) -> dict:
    direction = "above" if thr >= ref else "below"
    if sev is None:
        sev = abs(value - ref) / abs(thr - ref) if alert else 0.0
    return {"subject_kind": kind, "subject": subject, "statistic": stat, "method": "mean+-4sd", "value": value,
            "reference": ref, "threshold": thr, "direction": direction, "alert": alert, "severity": sev}  # fmt: skip


CTX = dict(model="din", day="2026-01-12", version_id=3, heads={"ctr": "click"},
           field_kinds={"category_id": "sparse", "price": "dense", "item_id": "sparse", "shop_id": "sparse",
                        "hour": "sparse", "item_image": "image", "hist_image": "image"},
           item_fields={"item_id"}, image_sources={"item_image": "item_id"}, compare="2026-01-11")  # fmt: skip


def findings(rows: list[dict], **ctx) -> pd.DataFrame:
    return diagnose(pd.DataFrame(rows), Context(**{**CTX, **ctx})).frame


def test_broken_feature_outranks_its_symptoms() -> None:
    rows = [
        row("field", "category_id", "top1_share", 1.0, 0.18, 0.25),
        row("field", "category_id", "log_cardinality", 0.0, math.log(20), math.log(20) - 0.2),
        row("field", "category_id", "psi", 6.0, 0.02, 0.06),
        row("importance", "ctr/category_id", "importance", 0.0001, 0.012, 0.005),
        row("quality", "ctr", "auc", 0.61, 0.66, 0.64),
        row("quality", "ctr", "calibration", 1.3, 1.0, 1.12),
        row("layer", "mlp.0", "neuron_drift_share", 0.4, 0.02, 0.12),
    ]
    f = findings(rows)
    top = f.iloc[0]
    assert (top["finding"], top["subject"], top["severity"]) == ("broken_feature", "category_id", "critical")
    assert "collapsed to (nearly) one value (1 distinct values (usually 20), top value 100.0% of rows (usually 18.0%))" in top["title"]
    assert "permutation importance 0.0001 (usually 0.012)" in top["title"]
    rest = f.iloc[1:].set_index("finding")
    # the quality drop names the field, and like the other symptoms is recorded as info
    assert rest.loc["quality_drop", "severity"] == "info" and "most likely cause: field category_id" in rest.loc["quality_drop", "title"]
    assert rest.loc["calibration_drift", "severity"] == "info" and rest.loc["neuron_drift", "severity"] == "info"
    assert list(f["score"]) == sorted(f["score"], reverse=True)
    ev = top["evidence_json"]
    assert ev["links"][0]["url"] == "/features?model=din&day=2026-01-12&field=category_id&compare=2026-01-11"
    assert {s["statistic"] for s in ev["symptoms"]} >= {"top1_share", "log_cardinality", "importance"}
    assert top["action"].startswith("Check the pipeline that logs this field")


def test_concentration_is_a_shift_not_a_collapse() -> None:
    rows = [row("field", "shop_id", "top1_share", 0.3, 0.02, 0.06), row("field", "shop_id", "psi", 0.9, 0.03, 0.09)]
    top = findings(rows).iloc[0]
    assert (top["finding"], top["subject"], top["severity"]) == ("distribution_shift", "shop_id", "warning")


def test_one_borderline_distance_is_not_believed() -> None:
    assert findings([row("field", "hour", "js", 0.09, 0.04, 0.08)]).empty
    two = findings([row("field", "hour", "js", 0.09, 0.04, 0.08), row("field", "hour", "psi", 0.1, 0.02, 0.08)])
    assert two.iloc[0]["finding"] == "distribution_shift"
    strong = findings([row("field", "hour", "psi", 0.5, 0.02, 0.08)])  # one statistic far beyond: believed
    assert strong.iloc[0]["finding"] == "distribution_shift"
    # a lone PSI twice past its (narrow) band but below 0.1, JS and Wasserstein silent: sparse buckets, not
    # believed -- on an image field as on any other (a clean daily-retrained world once paged
    # image_pipeline_broken on hist_image for a PSI of 0.099 against a usual 0.011)
    for f in ("hour", "hist_image"):
        assert findings([row("field", f, "psi", 0.099, 0.0107, 0.0507)]).empty, f
        assert findings([row("field", f, "psi", 0.099, 0.0107, 0.0507), row("field", f, "js", 0.2, 0.04, 0.12)]).iloc[0]["severity"] == \
            ("critical" if f == "hist_image" else "warning")  # confirmed by a second distance: believed
    assert findings([row("field", "hist_image", "psi", 0.35, 0.0107, 0.0507)]).iloc[0]["finding"] == "image_pipeline_broken"


def test_missing_values_and_oov_surge() -> None:
    f = findings([row("field", "price", "coverage", 0.5, 1.0, 0.98)])
    assert f.iloc[0]["finding"] == "broken_feature" and "coverage 50.0% (usually 100.0%)" in f.iloc[0]["title"]
    g = findings([
        row("field", "item_id", "oov_rate", 0.3, 0.0, 0.02),
        row("field", "item_image", "psi", 2.0, 0.02, 0.06), row("field", "item_image", "js", 0.5, 0.04, 0.08),
    ])  # fmt: skip
    assert (g.iloc[0]["finding"], g.iloc[0]["subject"], g.iloc[0]["severity"]) == ("oov_surge", "item_id", "critical")
    img = g.set_index("finding").loc["image_pipeline_broken"]
    assert img["severity"] == "info" and "because their source field item_id did" in img["title"]


def test_blank_images_alone_are_the_image_pipeline() -> None:
    f = findings([row("field", "item_image", "psi", 3.0, 0.02, 0.06), row("field", "item_image", "mean_z", 0.0, 3.3, 3.1)])
    assert (f.iloc[0]["finding"], f.iloc[0]["subject"], f.iloc[0]["severity"]) == ("image_pipeline_broken", "item_image", "critical")


def test_shuffled_field_from_lost_dependences() -> None:
    rows = [
        row("pair", "category_id~price", "dependence", 0.37, 1.0, 0.8),
        row("pair", "item_id~price", "dependence", 0.63, 1.0, 0.8),
        row("pair", "price~shop_id", "dependence", 0.51, 1.0, 0.8),
        row("importance", "ctr/price", "importance", -0.0005, 0.0011, -0.0069, alert=False),
    ]
    f = findings(rows)
    top = f.iloc[0]
    assert (top["finding"], top["subject"]) == ("broken_feature", "price")
    assert "shuffled or mis-joined" in top["title"] and "category_id, item_id, shop_id" in top["title"]
    assert len(f) == 1  # the partners are not blamed
    # a single fallen pair: the partner that lost more importance is the one that came apart
    tie = findings([row("pair", "hour~price", "dependence", 0.3, 0.9, 0.7),
                    row("importance", "ctr/price", "importance", 0.001, 0.02, 0.01),
                    row("importance", "ctr/hour", "importance", 0.004, 0.004, 0.001, alert=False)])  # fmt: skip
    assert tie.iloc[0]["subject"] == "price"


def test_position_calibration_and_checkpoint_rules() -> None:
    pos = findings([row("position", "position", "ctr_slope", 1.4, 0.7, 0.9), row("quality", "ctr", "calibration", 0.8, 1.0, 0.9)],
                   extra={"position": {"ctr_slope": 1.4, "ctr_by_position": {1: 0.2, 2: 0.08}}})
    assert pos.iloc[0]["finding"] == "position_bias_change" and pos.iloc[0]["subject"] == "position"
    assert pos.set_index("finding").loc["calibration_drift", "severity"] == "info"
    cal = findings([row("quality", "ctr", "calibration", 0.7, 1.0, 0.9), row("label", "click", "rate", 0.2, 0.13, 0.14)])
    top = cal.iloc[0]
    assert (top["finding"], top["subject"], top["severity"]) == ("calibration_drift", "ctr", "critical")  # |log 0.7| > 0.2
    assert "click rate 20.0% (usually 13.0%)" in top["title"]
    dead = [row("layer", "mlp.1", "dead_fraction", 1.0, 0.1, 0.35)]
    assert findings(dead).empty  # same checkpoint: the data moved, not the model
    d = findings(dead, new_version=True).iloc[0]
    assert (d["finding"], d["subject"], d["severity"]) == ("dead_neurons", "mlp.1", "critical")
    assert d["evidence_json"]["links"][0]["url"].startswith("/neurons?model=din&day=2026-01-12&layer=mlp.1")
    over = findings([row("checkpoint", "ctr", "train_test_auc_gap", 0.3, float("nan"), 0.1, sev=3.0)],
                    extra={"checkpoint_check": {"train_day": "2026-01-10", "auc": {"ctr": {"train": 0.95, "today": 0.65}}}})
    assert over.iloc[0]["finding"] == "overfitting" and "ctr AUC 0.95 on 2026-01-10 vs 0.65 today" in over.iloc[0]["title"]


def test_symptoms_alone_page_as_warnings() -> None:
    f = findings([row("layer", "mlp.0", "neuron_drift_share", 0.4, 0.02, 0.12)])
    assert (f.iloc[0]["finding"], f.iloc[0]["severity"]) == ("neuron_drift", "warning")
    p = findings([row("probe", "ctr/mlp.1", "probe_auc", 0.55, 0.65, 0.62)])  # 3.3 thresholds away
    assert p.iloc[0]["finding"] == "probe_drop"
    assert p.iloc[0]["evidence_json"]["links"][0]["url"].startswith("/probes?model=din&day=2026-01-12&layer=mlp.1&head=ctr")


def test_attribution_numbers() -> None:
    d = pd.DataFrame([
        row("importance", "ctr/price", "importance", 0.002, 0.010, 0.004),  # lost 0.008 of 0.020 total -> 0.4
        row("importance", "ctr/hour", "importance", 0.010, 0.010, 0.004, alert=False),
        row("saliency", "ctr/hour", "share", 0.30, 0.20, 0.28),  # leans on it: reference share 0.2 (> change 0.1) ...
        row("field", "hour", "psi", 0.5, 0.02, 0.1),  # ... x input drift 6 (capped at 5) -> 1.0
    ])  # fmt: skip
    ranked = attribute(d, "ctr")
    assert [r["field"] for r in ranked] == ["hour", "price"]
    assert ranked[0]["score"] == pytest.approx(0.2 * 5.0) and ranked[0]["input_drift"] == 5.0
    assert ranked[1]["score"] == pytest.approx(0.4) and ranked[1]["importance_lost"] == pytest.approx(0.4)


def test_severity_recomputed_from_stored_rows() -> None:
    d = pd.DataFrame([row("field", "x", "psi", 0.5, 0.1, 0.3), row("field", "y", "coverage", 0.9, 1.0, 0.95),
                      row("field", "z", "psi", 0.2, 0.1, 0.3, alert=False)]).drop(columns="severity")  # fmt: skip
    s = with_severity(d)["severity"].tolist()
    assert s == pytest.approx([2.0, 2.0, 0.0])


def test_link_format() -> None:
    c = Context(model="din prod", day="2026-01-12")
    assert link("/features", c, field="price") == "/features?model=din+prod&day=2026-01-12&field=price"


def test_image_saliency_collapse_is_the_image_pipeline() -> None:
    # DICM: the image field's distribution looks normal, but the model stopped using the pictures
    f = findings([row("saliency", "ctr/item_image", "share", 0.01, 0.10, 0.04),
                  row("importance", "ctr/item_image", "importance", 0.0001, 0.004, 0.0016)])  # fmt: skip
    top = f.iloc[0]
    assert (top["finding"], top["subject"], top["severity"]) == ("image_pipeline_broken", "item_image", "critical")
    assert "share of ctr/item_image 0.01 (usually 0.1)" in top["title"]


def test_blank_images_ranked_by_how_far_brightness_fell() -> None:
    rows = [row("field", "item_image", "psi", 2.0, 0.02, 0.06), row("field", "item_image", "mean_z", 2.0, 3.3, 3.1),
            row("field", "hist_image", "psi", 4.0, 0.02, 0.06), row("field", "hist_image", "mean_z", 0.1, 3.3, 3.1)]  # fmt: skip
    f = findings(rows)
    assert list(f["subject"][:2]) == ["hist_image", "item_image"]  # all history images blank, some candidates


def test_a_lone_borderline_probe_does_not_page() -> None:
    one = findings([row("probe", "ctr/embedding", "probe_auc", 0.60, 0.65, 0.62)])  # 1.7 thresholds away
    assert one.iloc[0]["finding"] == "probe_drop" and one.iloc[0]["severity"] == "info"
    two = findings([row("probe", "ctr/embedding", "probe_auc", 0.60, 0.65, 0.62), row("probe", "ctr/mlp.0", "probe_auc", 0.6, 0.66, 0.63)])
    assert set(two["severity"]) == {"warning"}


def test_importance_only_falls_are_symptoms_of_another_fields_broken_inputs() -> None:
    # DIN, category_id stuck: the attention is queried by the candidate's category, so the history
    # fields lose importance although their own rows are as usual
    imp = [row("importance", f"ctr/{f}", "importance", v, r, r * 0.6, alert=v < r * 0.6)
           for f, v, r in [("category_id", 0.0002, 0.01), ("hist_item_id", 0.001, 0.03), ("hist_category_id", 0.0005, 0.02),
                           ("price", 0.009, 0.01), ("shop_id", 0.0095, 0.01), ("hour", 0.01, 0.01)]]  # fmt: skip
    stuck = [row("field", "category_id", "top1_share", 1.0, 0.18, 0.25), row("field", "category_id", "psi", 6.0, 0.02, 0.06)]
    f = findings(stuck + imp).set_index(["finding", "subject"])
    assert f.iloc[0].name == ("broken_feature", "category_id") and f.iloc[0]["severity"] == "critical"
    for h in ("hist_item_id", "hist_category_id"):
        s = f.loc[("broken_feature", h)]
        assert s["severity"] == "info" and "symptom of broken_feature on category_id" in s["title"]
        assert s["evidence_json"]["secondary_to"] == {"finding": "broken_feature", "subject": "category_id"}
    assert set(f[f["severity"].isin(["critical", "warning"])].index) == {("broken_feature", "category_id")}
    # the same importance fall without another field's broken inputs is the shuffled-field finding, paged
    alone = findings(imp[1:]).set_index(["finding", "subject"])
    assert alone.loc[("broken_feature", "hist_item_id"), "severity"] == "critical"


def test_calibration_names_the_heads_own_label() -> None:
    rows = [row("quality", "ctcvr", "calibration", 1.6, 1.0, 1.2), row("label", "conversion", "rate", 0.004, 0.01, 0.008)]
    f = findings(rows, heads={"ctr": "click", "ctcvr": "click*conversion"})
    cal = f.set_index("finding").loc["calibration_drift"]
    assert cal["subject"] == "ctcvr" and "sum of predictions / click*conversion positives" in cal["title"]
    assert "conversion rate 0.4% (usually 1.0%)" in cal["title"]  # the product's factor joins its head


def test_every_finding_the_rules_can_emit_is_documented() -> None:
    import ast
    import re
    from pathlib import Path

    import ctrlens.monitor.diagnosis as diag

    root = Path(diag.__file__).parent
    emitted: set[str] = set(diag.BASE_SCORE)
    for p in root.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            # Finding("name", ...) and the change report's report("name", ...)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Finding", "report") and node.args:
                a0 = node.args[0]
                if isinstance(a0, ast.Constant) and isinstance(a0.value, str):
                    emitted.add(a0.value)
                elif isinstance(a0, ast.IfExp):
                    emitted |= {x.value for x in (a0.body, a0.orelse) if isinstance(x, ast.Constant)}
    doc = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text()
    documented = {n for h in re.findall(r"^### (.+)$", doc, flags=re.M) for n in re.findall(r"`([a-z_]+)`", h.split("(")[0])}
    assert {"dead_neurons", "saturated_neurons", "fields_swapped", "gradual_drift"} <= emitted
    assert emitted - documented == set(), "findings without a section in docs/alerts.md"
    assert emitted - set(diag.ACTIONS) == set(), "findings without an action"
