"""Background variants (ImageNet-9 style): each variant's defining property pixel-exactly on synthetic images
with exact masks, GrabCut on real photos, the thesis's filters and balancing, seeds, the evaluation metrics
(categories, BG-GAP, adversarial backgrounds, accuracy matrix) with known answers, and the errors."""
from __future__ import annotations

import numpy as np
import pytest

from threedb.robustness.backgrounds import (BG_FG_FOOLS, BG_FG_REQUIRED, BG_FOOLS, BG_IRRELEVANT, BG_REQUIRED,
                                            CATEGORIES, VARIANTS, BackgroundSample, BackgroundsError, CropSpec,
                                            ForegroundSample, Sample, accuracies, accuracy_matrix,
                                            adversarial_backgrounds, background_strip, bg_gap, category,
                                            category_counts, crop_removed_fraction, grabcut_foreground,
                                            image_categories, make_variants, mask_box, mask_foreground, mixed,
                                            only_bg_t, pixel_box, tiled_background, torch_predictor)

H, W = 40, 56


def synthetic(k: int, label: int, *, size: tuple[int, int] = (H, W), rng_seed: int | None = None) -> Sample:
    """A noise background whose red channel stays <= 200, and a textured blob whose red channel is 255:
    a pixel with red 255 is a foreground pixel of some image."""
    h, w = size
    rng = np.random.default_rng(1000 + k if rng_seed is None else rng_seed)
    image = rng.integers(0, 201, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h // 2 + (k % 3) - 1, w // 2 + (k % 5) - 2
    mask = ((yy - cy) / (h * 0.25)) ** 2 + ((xx - cx) / (w * 0.2)) ** 2 <= 1.0
    image[mask, 0] = 255
    image[mask, 1:] = rng.integers(0, 256, (int(mask.sum()), 2), dtype=np.uint8)
    return Sample(image=image, label=label, id=f"img{k:02d}", mask=mask)


def dataset(per_class: tuple[int, ...] = (3, 3, 3)) -> list[Sample]:
    out, k = [], 0
    for label, n in enumerate(per_class):
        for _ in range(n):
            out.append(synthetic(k, label))
            k += 1
    return out


# --------------------------------------------------------------------------- variants, exact masks

def test_every_variant_keeps_its_defining_property_pixel_exactly() -> None:
    samples = dataset()
    by_id = {s.id: s for s in samples}
    vs = make_variants(samples, crop=None, seed=3)
    assert vs.counts["kept"] == 9 and vs.per_class == 3
    assert vs.manifest()[0] == {"output_id": "ORIGINAL/img00", "variant": "ORIGINAL", "source_id": "img00",
                                "label": 0, "background_id": "img00", "background_label": 0,
                                "foreground_method": None, "grabcut_iterations": None}
    assert [len(vs.variant(v)) for v in VARIANTS] == [9] * 8
    for row in vs.rows:
        src = by_id[row.source_id]
        image, mask = src.image, src.mask
        out = vs.image(row)
        assert out.dtype == np.uint8 and out.shape == image.shape
        x0, y0, x1, y1 = vs.boxes[row.source_id]
        inside = np.zeros((H, W), bool)
        inside[y0:y1, x0:x1] = True
        if row.variant == "ORIGINAL":
            assert np.array_equal(out, image)
        elif row.variant == "ONLY-BG-B":
            assert (out[inside] == 0).all() and np.array_equal(out[~inside], image[~inside])
        elif row.variant == "ONLY-BG-T":
            assert not (out[..., 0] == 255).any()                    # no foreground pixel left
            assert np.array_equal(out[~inside], image[~inside])
        elif row.variant == "NO-FG":
            assert (out[mask] == 0).all() and np.array_equal(out[~mask], image[~mask])
        elif row.variant == "ONLY-FG":
            assert (out[~mask] == 0).all() and np.array_equal(out[mask], image[mask])
        else:                                                       # MIXED-*
            donor = by_id[row.background_id]
            assert np.array_equal(out[mask], image[mask])
            bg = only_bg_t(donor.image, vs.boxes[donor.id])
            assert np.array_equal(out[~mask], bg[~mask])
            assert row.background_id != row.source_id and row.background_label == donor.label
            if row.variant == "MIXED-SAME":
                assert donor.label == src.label
            if row.variant == "MIXED-NEXT":
                assert donor.label == (src.label + 1) % 3
        assert row.foreground_method == {"ORIGINAL": None, "ONLY-BG-B": "box", "ONLY-BG-T": "box"}.get(
            row.variant, "mask")


def test_mask_box_is_tight_and_only_fg_of_the_mask() -> None:
    s = synthetic(0, 0)
    fg = mask_foreground(s.mask)
    rows, cols = np.nonzero(s.mask)
    assert fg.ok and fg.method == "mask" and fg.iterations is None
    assert fg.box == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == mask_box(s.mask)
    empty = mask_foreground(np.zeros((4, 5), bool))
    assert not empty.ok and empty.reason == "empty mask" and empty.box is None


def test_tiled_background_uses_the_largest_strip_outside_the_box() -> None:
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    # top 5 rows (200 px), bottom 30-19 = 11 rows (440 px), left 8 cols (240 px), right 40-30 = 10 (300 px)
    box = (8, 5, 30, 19)
    assert background_strip(30, 40, box) == ("rows", 19, 30)
    tiled = tiled_background(image, box)
    rows = 19 + (np.arange(30) - 19) % 11                          # the strip's rows, repeating from the strip
    assert np.array_equal(tiled, image[rows]) and np.array_equal(tiled[19:30], image[19:30])
    out = only_bg_t(image, box)
    assert np.array_equal(out[5:19, 8:30], image[rows[5:19]][:, 8:30])
    outside = np.ones((30, 40), bool)
    outside[5:19, 8:30] = False
    assert np.array_equal(out[outside], image[outside])
    assert background_strip(30, 40, (0, 0, 25, 30)) == ("cols", 25, 40)   # only the right strip is left
    cols = 25 + (np.arange(40) - 25) % 15
    assert np.array_equal(tiled_background(image, (0, 0, 25, 30)), image[:, cols])
    assert background_strip(30, 40, (10, 0, 30, 30)) == ("cols", 0, 10)   # left 10 == right 10: first wins
    with pytest.raises(BackgroundsError, match="no background strip"):
        background_strip(30, 40, (0, 0, 40, 30))


def test_mixed_resizes_another_size_of_background_and_keeps_the_foreground() -> None:
    s = synthetic(1, 0)
    big = np.full((80, 112, 3), 7, np.uint8)
    out = mixed(s.image, s.mask, big)
    assert np.array_equal(out[s.mask], s.image[s.mask]) and (out[~s.mask] == 7).all()


def test_images_of_different_sizes_mix_and_refuse_to_batch() -> None:
    samples = [synthetic(k, k % 2, size=(H, W) if k < 4 else (2 * H, W)) for k in range(8)]
    vs = make_variants(samples, crop=None, variants=["MIXED-RAND", "ORIGINAL"])
    for row in vs.variant("MIXED-RAND"):
        src = next(s for s in samples if s.id == row.source_id)
        out = vs.image(row)
        assert out.shape == src.image.shape and np.array_equal(out[src.mask], src.image[src.mask])
    with pytest.raises(BackgroundsError, match="Sample.resized"):
        vs.batch("ORIGINAL")
    resized = make_variants([s.resized(H, W) for s in samples], crop=None, variants=["ORIGINAL"])
    assert resized.batch("ORIGINAL")[0].shape == (8, H, W, 3)


# --------------------------------------------------------------------------- GrabCut on real photos

def _photo(name: str) -> np.ndarray:
    import cv2
    from skimage import data

    image = getattr(data, name)()
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _ellipse(shape: tuple[int, ...], centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    import cv2

    m = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(m, centre, axes, 0, 0, 360, 1, -1)
    return m > 0


def _rect(shape: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape[:2], bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


# (photo at half size, hand-drawn box, hand-drawn rough expectation of the object)
PHOTOS = {
    "rocket": ((150, 60, 172, 205), lambda s: _rect(s, (155, 64, 168, 203))),
    "coffee": ((35, 7, 242, 197), lambda s: _ellipse(s, (139, 114), (101, 80)) | _rect(s, (88, 8, 205, 140))),
    "astronaut": ((70, 5, 155, 85), lambda s: _ellipse(s, (113, 44), (37, 40))),   # her head
}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_grabcut_finds_the_object_in_its_box_on_a_real_photo(name: str) -> None:
    box, expected_of = PHOTOS[name]
    image = _photo(name)
    expected = expected_of(image.shape)
    fg = grabcut_foreground(image, box)
    assert fg.ok and fg.method == "grabcut" and fg.iterations == 5
    iou = (fg.mask & expected).sum() / (fg.mask | expected).sum()
    box_iou = expected.sum() / _rect(image.shape, box).sum()       # the expectation lies in the box
    assert iou >= 0.7 and iou >= box_iou + 0.1, (iou, box_iou)
    assert (fg.mask & expected).sum() / fg.mask.sum() >= 0.9        # little of the background
    assert not fg.mask[~_rect(image.shape, box)].any()              # nothing outside the box
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    assert fg.mask[y0 + h // 3:y1 - h // 3, x0 + w // 3:x1 - w // 3].mean() >= 0.95   # the box centre
    again = grabcut_foreground(image, box)
    assert np.array_equal(again.mask, fg.mask)                      # OpenCV's RNG is reseeded


def test_grabcut_variants_on_photos_record_the_method_and_keep_their_properties() -> None:
    samples = [Sample(image=_photo(n), label=k, id=n, boxes=np.array([PHOTOS[n][0]], float))
               for k, n in enumerate(sorted(PHOTOS))]
    vs = make_variants(samples, variants=["ONLY-FG", "NO-FG", "MIXED-NEXT"], grabcut_iterations=3, crop=None)
    assert vs.counts["grabcut_failed"] == 0 and vs.counts["kept"] == 3
    for row in vs.rows:
        fg = vs.foregrounds[row.source_id]
        image = vs.samples[row.source_id].image
        assert row.foreground_method == "grabcut" and row.grabcut_iterations == 3 == fg.iterations
        out = vs.image(row)
        if row.variant == "ONLY-FG":
            assert (out[~fg.mask] == 0).all() and np.array_equal(out[fg.mask], image[fg.mask])
        elif row.variant == "NO-FG":
            assert (out[fg.mask] == 0).all()
        else:
            assert np.array_equal(out[fg.mask], image[fg.mask])


def test_grabcut_failure_is_reported_not_raised() -> None:
    flat = np.full((60, 80, 3), 120, np.uint8)
    nothing = grabcut_foreground(flat, (10, 10, 70, 50))
    assert not nothing.ok and "empty foreground" in nothing.reason and not nothing.mask.any()
    whole = grabcut_foreground(flat, (0, 0, 80, 60))                 # no pixel left to model the background
    assert not whole.ok and "cv2.grabCut raised" in whole.reason
    with pytest.raises(BackgroundsError, match="iterations"):
        grabcut_foreground(flat, (10, 10, 70, 50), iterations=0)


# --------------------------------------------------------------------------- filters and balancing

def test_filters_are_counted_and_applied_per_variant_kind() -> None:
    rng = np.random.default_rng(0)
    good = [synthetic(k, k % 2) for k in range(6)]
    flat = np.full((H, W, 3), 90, np.uint8)
    noisy = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    huge = np.zeros((H, W), bool)
    huge[:H - 2] = True                                             # its box covers 95% of the image
    odd = [
        Sample(noisy, 0, "two_boxes", boxes=np.array([[1, 1, 10, 10], [20, 20, 30, 30]], float)),
        Sample(noisy, 1, "no_box", boxes=np.zeros((0, 4))),
        Sample(noisy, 0, "flat_box", boxes=np.array([[5, 5, 5, 30]], float)),
        Sample(noisy, 1, "empty_mask", mask=np.zeros((H, W), bool)),
        Sample(noisy, 0, "huge_box", mask=huge),
        Sample(flat, 1, "grabcut_fails", boxes=np.array([[10, 8, 40, 30]], float)),
        Sample(np.zeros((100, 300, 3), np.uint8), 0, "cropped_away", boxes=np.array([[0, 10, 60, 90]], float)),
    ]
    seen = []
    vs = make_variants(good + odd, crop=CropSpec(resize=None, size=100), paired=False, balance=False,
                       progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 13) for k in range(1, 14)]
    c = vs.counts
    assert (c["input"], c["boxes_not_one"], c["box_empty"], c["mask_empty"]) == (13, 2, 1, 1)
    assert (c["box_too_large"], c["grabcut_failed"], c["crop_removes_box"]) == (1, 1, 1)
    original = {r.source_id for r in vs.variant("ORIGINAL")}
    background = {r.source_id for r in vs.variant("ONLY-BG-T")}
    foreground = {r.source_id for r in vs.variant("ONLY-FG")}
    ids = {s.id for s in good}
    assert original == ids | {"huge_box", "grabcut_fails", "cropped_away"}
    assert background == ids | {"grabcut_fails", "cropped_away"}
    assert foreground == ids | {"huge_box"}                         # huge box: fine for a foreground
    assert not vs.foregrounds["grabcut_fails"].ok and "cropped_away" not in vs.foregrounds
    paired = make_variants(good + odd, crop=CropSpec(resize=None, size=100), balance=False)
    assert {r.source_id for r in paired.rows} == ids
    assert paired.counts["usable"] == 6 and paired.counts["box_too_large"] == 1


def test_crop_filter_geometry() -> None:
    crop = CropSpec(resize=256, size=224)
    assert crop.window(256, 512) == (144.0, 16.0, 368.0, 240.0)
    assert crop.window(512, 512) == (32.0, 32.0, 480.0, 480.0)
    assert crop_removed_fraction((0, 0, 144, 256), 256, 512, crop) == 1.0
    assert crop_removed_fraction((144, 16, 368, 240), 256, 512, crop) == 0.0
    assert crop_removed_fraction((100, 16, 188, 240), 256, 512, crop) == pytest.approx(0.5)
    # exactly half removed fails the "< 50% removed" filter; a bit less passes
    wide = np.zeros((256, 512, 3), np.uint8)
    half_mask, less_mask = np.zeros((256, 512), bool), np.zeros((256, 512), bool)
    half_mask[16:240, 100:188] = True
    less_mask[16:240, 101:188] = True
    at_half, less = Sample(wide, 0, "half", mask=half_mask), Sample(wide, 0, "less", mask=less_mask)
    vs = make_variants([at_half, less], variants=["ORIGINAL", "NO-FG"], paired=False, balance=False)
    assert vs.counts["crop_removes_box"] == 1 and "half" not in vs.foregrounds and "less" in vs.foregrounds


def test_pixel_box_rounds_outwards_and_clips() -> None:
    assert pixel_box([1.2, 2.7, 10.1, 20.0], 30, 40) == (1, 2, 11, 20)
    assert pixel_box([-0.3, 0, 40.4, 30], 30, 40) == (0, 0, 40, 30)
    with pytest.raises(BackgroundsError, match="outside the 40x30 image"):
        pixel_box([0, 0, 45, 30], 30, 40)
    with pytest.raises(BackgroundsError, match="inverted"):
        pixel_box([10, 0, 5, 30], 30, 40)


def test_balancing_cuts_every_class_to_the_smallest_and_is_seeded() -> None:
    samples = dataset((5, 2, 4))
    vs = make_variants(samples, crop=None, seed=0)
    assert vs.per_class == 2 and vs.usable == {"all": {0: 5, 1: 2, 2: 4}}
    assert vs.counts["kept"] == 6 and vs.counts["balanced_out"] == 5
    for v in VARIANTS:
        labels = [r.label for r in vs.variant(v)]
        assert sorted(labels) == [0, 0, 1, 1, 2, 2]
    assert len({r.source_id for r in vs.rows}) == 6                 # paired: the same images everywhere
    same = make_variants(samples, crop=None, seed=0)
    assert same.manifest() == vs.manifest()
    for a, b in zip(vs.rows, same.rows):
        assert np.array_equal(vs.image(a), same.image(b))
    selections = {tuple(r.source_id for r in make_variants(samples, crop=None, seed=s).variant("ORIGINAL"))
                  for s in range(6)}
    assert len(selections) > 1                                      # the seed picks the subset
    unpaired = make_variants(samples, crop=None, seed=0, paired=False, variants=["ORIGINAL", "ONLY-FG"])
    assert [len(unpaired.variant(v)) for v in ("ORIGINAL", "ONLY-FG")] == [6, 6]


def test_background_donors_depend_on_the_seed_only() -> None:
    samples = dataset((4, 4, 4))
    donors = {s: [r.background_id for r in make_variants(samples, crop=None, seed=s).variant("MIXED-RAND")]
              for s in (0, 0, 1, 2)}
    again = [r.background_id for r in make_variants(samples, crop=None, seed=0).variant("MIXED-RAND")]
    assert donors[0] == again
    assert len({tuple(v) for v in donors.values()}) > 1
    no_own = make_variants(samples, crop=None, seed=0, mixed_rand_own_class=False, variants=["MIXED-RAND"])
    assert all(r.background_label != r.label for r in no_own.rows)


# --------------------------------------------------------------------------- evaluation

def test_categories_follow_table_2_3() -> None:
    assert category(True, False, True) == BG_REQUIRED
    assert category(False, True, False) == BG_FOOLS
    assert category(True, False, False) == BG_FG_REQUIRED
    assert category(False, True, True) == BG_FG_FOOLS
    for full in (True, False):
        for bg in (True, False):
            assert category(full, full, bg) == BG_IRRELEVANT
    labels = {"a": 0, "b": 1, "c": 2, "d": 0, "e": 1}
    predictions = {"ORIGINAL": {"a": 0, "b": 0, "c": 2, "d": 1, "e": 1},
                   "MIXED-RAND": {"a": 1, "b": 1, "c": 0, "d": 0, "e": 1},
                   "ONLY-BG-T": {"a": 0, "b": 2, "c": 1, "d": 0, "e": 2}}
    cats = image_categories(predictions, labels)
    assert cats == {"a": BG_REQUIRED, "b": BG_FOOLS, "c": BG_FG_REQUIRED, "d": BG_FG_FOOLS, "e": BG_IRRELEVANT}
    assert category_counts(cats) == {c: 1 for c in CATEGORIES}
    with pytest.raises(BackgroundsError, match="ONLY-BG-T"):
        image_categories({"ORIGINAL": {}, "MIXED-RAND": {}}, labels)


def test_accuracies_bg_gap_and_the_accuracy_matrix() -> None:
    labels = {"a": 0, "b": 1, "c": 1, "d": 0}
    preds = {"MIXED-SAME": {"a": 0, "b": 1, "c": 1, "d": 1}, "MIXED-RAND": {"a": 0, "b": 0, "c": 1, "d": 1}}
    acc = accuracies(preds, labels)
    assert acc == {"MIXED-SAME": 0.75, "MIXED-RAND": 0.5} and bg_gap(acc) == 0.25
    matrix = accuracy_matrix({"ORIGINAL": preds, "MIXED-RAND": {"MIXED-RAND": {"a": 0, "b": 1}}}, labels)
    assert matrix.train == ["ORIGINAL", "MIXED-RAND"] and matrix.test == ["MIXED-SAME", "MIXED-RAND"]
    assert matrix.get("ORIGINAL", "MIXED-SAME") == 0.75 and matrix.get("MIXED-RAND", "MIXED-RAND") == 1.0
    assert np.isnan(matrix.get("MIXED-RAND", "MIXED-SAME"))
    assert matrix.table()["rows"] == [["ORIGINAL", 75.0, 50.0], ["MIXED-RAND", "", 100.0]]
    with pytest.raises(BackgroundsError, match="MIXED-SAME"):
        bg_gap({"MIXED-RAND": 0.5})
    with pytest.raises(BackgroundsError, match="no label"):
        accuracies({"ORIGINAL": {"zz": 1}}, labels)


def _adversarial_case(fg_size: tuple[int, int] = (12, 12)):
    """Foregrounds with red = class; backgrounds with blue = class and green = bitmask of the foreground
    classes they fool. The fake model reads the corner (background) and the centre (foreground)."""
    h, w = fg_size
    mask = np.zeros((h, w), bool)
    mask[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2] = True
    fgs = []
    for k, label in enumerate([0, 0, 1, 1, 2, 2]):
        image = np.zeros((h, w, 3), np.uint8)
        image[mask] = (label, 0, 0)
        fgs.append(ForegroundSample(id=f"f{k}", label=label, image=image, mask=mask))
    spec = [(0, 0b110), (0, 0), (1, 0b001), (2, 0b011), (2, 0b010)]   # (class, fooled foreground classes)
    bgs = [BackgroundSample(id=f"b{j}", label=c, image=np.full((10, 10, 3), (0, bits, c), np.uint8))
           for j, (c, bits) in enumerate(spec)]
    calls = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        corner, centre = batch[:, 0, 0], batch[:, h // 2, w // 2]
        fooled = (corner[:, 1].astype(int) >> centre[:, 0].astype(int)) & 1
        return np.where(fooled == 1, corner[:, 2], centre[:, 0]).astype(np.int64)

    return fgs, bgs, predict, calls


def test_adversarial_backgrounds_against_a_model_with_known_answers() -> None:
    fgs, bgs, predict, calls = _adversarial_case()
    result = adversarial_backgrounds(predict, fgs, bgs, batch_size=4)
    # b0 (class 0) fools classes 1, 2; b2 (class 1) fools 0; b3 (class 2) fools 0, 1; b4 (class 2) fools 1
    assert result.success_rate.tolist() == [1.0, 0.0, 0.5, 1.0, 0.5]
    assert result.fooled_fraction == 1.0
    assert result.fooled_by_class == {0: 1.0, 1: 0.5, 2: 1.0}
    assert result.evaluations == 6 * 5 - (2 * 2 + 2 * 1 + 2 * 2)    # never its own class
    assert (result.flips[0, :2] == -1).all() and result.flips[0, 2] == 1
    assert result.most_adversarial(2) == [("b0", 1.0), ("b3", 1.0)]
    assert result.most_adversarial(5, label=2) == [("b3", 1.0), ("b4", 0.5)]
    assert calls and all(n <= 4 and shape == [12, 12, 3] for n, *shape in calls)


def test_adversarial_budget_is_seeded_and_resizes_backgrounds() -> None:
    fgs, bgs, predict, calls = _adversarial_case(fg_size=(16, 20))
    one = adversarial_backgrounds(predict, fgs, bgs, budget=1, seed=5)
    assert ((one.flips >= 0).sum(axis=1) == 1).all() and one.evaluations == 6
    assert np.array_equal(one.flips, adversarial_backgrounds(predict, fgs, bgs, budget=1, seed=5).flips)
    assert any(not np.array_equal(one.flips, adversarial_backgrounds(predict, fgs, bgs, budget=1, seed=s).flips)
               for s in range(6, 12))
    assert all(shape == [16, 20, 3] for _, *shape in calls)
    every = adversarial_backgrounds(predict, fgs, bgs)
    assert every.fooled == {f"f{k}": True for k in range(6)}


def test_adversarial_backgrounds_from_a_variant_set_and_a_torch_model(one_thread) -> None:
    import torch

    class Brightest(torch.nn.Module):                       # logits = per-channel means: argmax = brightest
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.dtype == torch.float32 and x.shape[1] == 3 and float(x.max()) <= 1.0
            return x.mean(dim=(2, 3))

    model = Brightest().train()
    predict = torch_predictor(model)
    batch = np.zeros((2, 4, 4, 3), np.uint8)
    batch[0, ..., 2] = 200
    batch[1, ..., 1] = 9
    assert predict(batch).tolist() == [2, 1] and model.training
    vs = make_variants(dataset(), crop=None)
    result = adversarial_backgrounds(predict, vs.foreground_samples(), vs.background_samples(), batch_size=7)
    assert result.flips.shape == (9, 9) and result.evaluations == 9 * 6


def test_predict_must_return_one_class_per_image() -> None:
    fgs, bgs, _, _ = _adversarial_case()
    with pytest.raises(BackgroundsError, match="expected 3 class indices"):
        adversarial_backgrounds(lambda b: np.zeros(len(b) + 1, int), fgs, bgs, batch_size=3)
    with pytest.raises(BackgroundsError, match="class indices"):
        adversarial_backgrounds(lambda b: np.full(len(b), 0.5), fgs, bgs)


# --------------------------------------------------------------------------- inputs and errors

def test_sample_from_an_image_dataset_item() -> None:
    import torch

    s = synthetic(0, 1)
    item = (torch.from_numpy(s.image).permute(2, 0, 1), 1,
            {"id": "x", "mask": torch.from_numpy(s.mask), "boxes": torch.tensor([[1.0, 2.0, 20.0, 30.0]])})
    sample = Sample.from_item(*item)
    assert np.array_equal(sample.image, s.image) and np.array_equal(sample.mask, s.mask)
    assert sample.id == "x" and sample.label == 1 and sample.boxes.tolist() == [[1.0, 2.0, 20.0, 30.0]]


def test_bad_input_gets_one_clear_error() -> None:
    s = synthetic(0, 0)
    with pytest.raises(BackgroundsError, match="sample 'lonely' has neither a mask nor a box"):
        make_variants([Sample(s.image, 0, "lonely")])
    with pytest.raises(BackgroundsError, match=r"sample 'img00': mask is \(10, 10\)"):
        make_variants([Sample(s.image, 0, s.id, mask=np.ones((10, 10), bool))])
    with pytest.raises(BackgroundsError, match="HxWx3 uint8"):
        make_variants([Sample(s.image.astype(np.float32), 0, s.id, mask=s.mask)])
    with pytest.raises(BackgroundsError, match="outside"):
        make_variants([Sample(s.image, 0, s.id, boxes=np.array([[0, 0, W + 5, H]], float))])
    with pytest.raises(BackgroundsError, match="appears more than once"):
        make_variants([s, s])
    with pytest.raises(BackgroundsError, match="unknown variants"):
        make_variants([s], variants=["ONLY-BG"])
    with pytest.raises(BackgroundsError, match="label 3 is not a class index"):
        make_variants([Sample(s.image, 3, "a", mask=s.mask)], num_classes=3)
    # too few to balance: class 1 has one image, MIXED-SAME needs another donor of that class
    with pytest.raises(BackgroundsError, match=r"class 1 \('bird'\) has 1 usable images.*'dog': 3, 'bird': 1"):
        make_variants(dataset((3, 1)), crop=None, class_names=["dog", "bird"])
    with pytest.raises(BackgroundsError, match=r"class 2 has 0 usable images"):
        make_variants(dataset((2, 2)), crop=None, num_classes=3, variants=["ORIGINAL"])
    assert make_variants(dataset((3, 1)), crop=None, variants=["ORIGINAL", "MIXED-RAND"]).per_class == 1
