"""A blank-images incident is logged as a per-day override table; the loader must serve it on that day only."""

import torch

from ctrlens.data import DailyDataset
from ctrlens.synth import Incident
from synth_fixtures import small_world


def test_day_override_blanks_images_on_its_day_only(tmp_path):
    w = small_world(tmp_path / "w", days=3, rows_per_day=800, incidents=[Incident(1, "blank_images", None, 1.0)])
    ds = DailyDataset(w.root)
    d0, d1, d2 = ds.days()
    assert (w.root / f"day={d1}" / "_images.parquet").exists()

    def brightness(day):
        b = ds.load_day(day)
        cand = b.images[b.image_index["item_image"]]  # [B, C, H, W] of the candidates
        return cand.flatten(1).mean(1)

    on, before, after = brightness(d1), brightness(d0), brightness(d2)
    assert (before > 0).float().mean() > 0.95 and (after > 0).float().mean() > 0.95
    blank = (on == 0).float().mean().item()
    assert blank > 0.5, f"only {blank:.0%} of candidate images blank on the incident day"
    # the shared table itself is untouched
    assert ds.images.pixels[1:].flatten(1).amax(1).gt(0).float().mean() > 0.95
    torch.testing.assert_close(brightness(d0), before)


def test_field_stats_see_the_days_images(tmp_path):
    from ctrlens.data.stats import field_stats

    w = small_world(tmp_path / "w", days=2, rows_per_day=600, incidents=[Incident(1, "blank_images", None, 1.0)])
    ds = DailyDataset(w.root)
    d0, d1 = ds.days()
    img = lambda day: field_stats(ds, day).frame.set_index("field").loc["item_image"]
    assert img(d1)["mean"] < 0.5 * img(d0)["mean"], (img(d0)["mean"], img(d1)["mean"])
