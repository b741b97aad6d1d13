"""From labelled samples to the balanced ImageNet-9-style variant sets, with a manifest and filter counts.

:func:`make_variants` follows the thesis (ch. 2, app. A.1):

1. **filters**, each counted, never raised. For every image: exactly one box (``boxes_not_one``), a
   non-empty box (``box_empty``), or a non-empty exact mask (``mask_empty``). Background-only variants
   (and the backgrounds the MIXED variants borrow): the box covers at most ``max_box_fraction`` (90%) of the
   image (``box_too_large``). Foreground variants: the model's crop removes less than ``max_crop_removed``
   (50%) of the box (``crop_removes_box``) and GrabCut succeeds (``grabcut_failed``). A sample is tested
   by a filter only while some requested variant still wants it; GrabCut runs last (it is the slow one).
2. **pools**. ``paired=True`` (default): one pool, the samples that pass every filter the requested
   variants need, so every variant holds the same images (what the per-image categories and the paired
   comparisons of :mod:`.evaluation` need). ``paired=False``: ORIGINAL draws from the samples passing the
   per-image filters, ONLY-BG-* from those passing the box-size filter, NO-FG / ONLY-FG / MIXED-* from those
   passing the foreground filters (one shared foreground selection: identical foregrounds in the four
   foreground datasets, as the thesis wants).
3. **balancing**: every class of every pool is cut to the smallest class count over the pools in use
   (a seeded random subset per class; "every variant keeps the size of the smallest variant"). A class with
   fewer usable images than needed (1, or 2 with MIXED-SAME, which needs a donor other than the image
   itself) is a :class:`BackgroundsError` naming the class and the counts.
4. **backgrounds** for MIXED-*: the ONLY-BG-T image of a donor drawn (seeded) from the balanced background
   selection, never the image itself. MIXED-SAME: a donor of the same class. MIXED-RAND: a class drawn
   uniformly [GAP: the thesis leaves open whether y may be drawn; default yes, ``mixed_rand_own_class``],
   then a donor of it. MIXED-NEXT: a donor of class ``(y + 1) mod num_classes``.

Variant images are made on demand (:meth:`VariantSet.image`), so a set costs the memory of its inputs,
not eight times it. Images are kept at their own size (the crop filter models the model's crop; the
images are not cropped); a donor background of another size is resized to the recipient's.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from .errors import BackgroundsError
from .evaluation import BackgroundSample, ForegroundSample
from .filters import MAX_BOX_FRACTION, MAX_CROP_REMOVED, CropSpec, box_image_fraction, crop_removed_fraction
from .foreground import (GRABCUT_ITERATIONS, Box, ForegroundMask, box_area, grabcut_foreground, mask_foreground,
                         pixel_box)
from .samples import Sample, check_ids, check_sample
from .variants import (BACKGROUND_VARIANTS, FOREGROUND_VARIANTS, MIXED_NEXT, MIXED_RAND, MIXED_SAME, MIXED_VARIANTS,
                       NO_FG, ONLY_BG_B, ONLY_BG_T, ONLY_FG, ORIGINAL, VARIANTS, mixed, no_fg, only_bg_b, only_bg_t,
                       only_fg)

FILTERS: tuple[str, ...] = ("boxes_not_one", "box_empty", "mask_empty", "box_too_large", "crop_removes_box",
                            "grabcut_failed")
POOLS: tuple[str, ...] = ("all", "base", "background", "foreground")
_BACKGROUND_CACHE = 256


@dataclass(frozen=True)
class VariantRow:
    """One output image of the variant sets (one manifest row).

    ``output_id``: ``"<variant>/<source_id>"``; ``label``: the class of the source image (its foreground);
    ``background_id`` / ``background_label``: where the background comes from (the source itself for
    ORIGINAL, ONLY-BG-*, NO-FG; the donor for MIXED-*; ``None`` for ONLY-FG's black);
    ``foreground_method``: how the foreground was found (``"mask"`` or ``"grabcut"``; ``"box"`` for
    ONLY-BG-*; ``None`` for ORIGINAL); ``grabcut_iterations`` when GrabCut found it.
    """

    output_id: str
    variant: str
    source_id: str
    label: int
    background_id: Optional[str]
    background_label: Optional[int]
    foreground_method: Optional[str]
    grabcut_iterations: Optional[int]

    def as_dict(self) -> dict:
        """The row as a JSON-ready dict."""
        return asdict(self)


@dataclass
class VariantSet:
    """The balanced variant sets of :func:`make_variants`.

    ``rows``: every output (variant by variant in the requested order, sources in input order);
    ``counts``: ``input``, each filter of :data:`FILTERS` (samples it removed), ``usable`` (samples left for
    at least one variant), ``balanced_out`` (usable but dropped by balancing), ``kept``;
    ``usable``: ``{pool: {class: count}}`` before balancing; ``per_class``: images per class per variant
    (``None`` without balancing); ``boxes``: the pixel box of every sample past the per-image filters;
    ``foregrounds``: every foreground computed, failed ones included (``ok``, ``reason``).
    """

    variants: tuple[str, ...]
    rows: list[VariantRow]
    counts: dict[str, int]
    usable: dict[str, dict[int, int]]
    per_class: Optional[int]
    num_classes: int
    seed: int
    samples: dict[str, Sample]
    boxes: dict[str, Box]
    foregrounds: dict[str, ForegroundMask]
    foreground_ids: list[str]
    background_ids: list[str]
    _backgrounds: "OrderedDict[str, np.ndarray]" = field(default_factory=OrderedDict, repr=False)

    # -- outputs ------------------------------------------------------------------------------
    def variant(self, name: str) -> list[VariantRow]:
        """The rows of one variant."""
        if name not in self.variants:
            raise BackgroundsError(f"variant {name!r} was not made (this set has {list(self.variants)})")
        return [row for row in self.rows if row.variant == name]

    def image(self, row: VariantRow) -> np.ndarray:
        """The ``HxWx3`` uint8 image of one row (a new array)."""
        sample = self.samples[row.source_id]
        if row.variant == ORIGINAL:
            return sample.image.copy()
        if row.variant == ONLY_BG_B:
            return only_bg_b(sample.image, self.boxes[row.source_id])
        if row.variant == ONLY_BG_T:
            return self.background(row.source_id).copy()
        mask = self.foregrounds[row.source_id].mask
        if row.variant == NO_FG:
            return no_fg(sample.image, mask)
        if row.variant == ONLY_FG:
            return only_fg(sample.image, mask)
        if row.variant in MIXED_VARIANTS:
            assert row.background_id is not None
            return mixed(sample.image, mask, self.background(row.background_id))
        raise BackgroundsError(f"unknown variant {row.variant!r}")

    def images(self, name: str) -> Iterator[tuple[VariantRow, np.ndarray]]:
        """``(row, image)`` for each output of one variant, made one at a time."""
        for row in self.variant(name):
            yield row, self.image(row)

    def batch(self, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """One variant stacked: images ``NxHxWx3`` uint8, labels ``N`` int64, source ids. Needs images of one
        size (resize the samples first, :meth:`Sample.resized`, when they differ)."""
        rows = self.variant(name)
        if not rows:
            return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.int64), []
        images = [self.image(row) for row in rows]
        shapes = sorted({im.shape for im in images})
        if len(shapes) > 1:
            raise BackgroundsError(f"variant {name!r} has images of {len(shapes)} sizes ({shapes[:3]}...): "
                                   "resize the samples to one size (Sample.resized) to batch them")
        return (np.stack(images), np.array([row.label for row in rows], dtype=np.int64),
                [row.source_id for row in rows])

    def background(self, source_id: str) -> np.ndarray:
        """The ONLY-BG-T image of a sample (cached: the MIXED variants reuse donors). Do not modify it."""
        cached = self._backgrounds.get(source_id)
        if cached is None:
            cached = only_bg_t(self.samples[source_id].image, self.boxes[source_id])
            cached.setflags(write=False)
            self._backgrounds[source_id] = cached
            if len(self._backgrounds) > _BACKGROUND_CACHE:
                self._backgrounds.popitem(last=False)
        else:
            self._backgrounds.move_to_end(source_id)
        return cached

    @property
    def labels(self) -> dict[str, int]:
        """``{source_id: label}`` of every sample with an output (the labels :mod:`.evaluation` scores with)."""
        return {row.source_id: row.label for row in self.rows}

    def manifest(self) -> list[dict]:
        """The manifest: one JSON-ready dict per output (see :class:`VariantRow`)."""
        return [row.as_dict() for row in self.rows]

    # -- inputs of the adversarial-background evaluation -----------------------------------------
    def foreground_samples(self) -> list[ForegroundSample]:
        """The balanced foreground selection (the MIXED-* foregrounds) for
        :func:`~.evaluation.adversarial_backgrounds`."""
        return [ForegroundSample(id=i, label=self.samples[i].label, image=self.samples[i].image,
                                 mask=self.foregrounds[i].mask) for i in self.foreground_ids]

    def background_samples(self) -> list[BackgroundSample]:
        """The balanced background selection as ONLY-BG-T images (the MIXED-* donors)."""
        return [BackgroundSample(id=i, label=self.samples[i].label,
                                 image=only_bg_t(self.samples[i].image, self.boxes[i])) for i in self.background_ids]


def make_variants(samples: Iterable[Sample], *, num_classes: Optional[int] = None,
                  variants: Sequence[str] = VARIANTS, seed: int = 0,
                  grabcut_iterations: int = GRABCUT_ITERATIONS, grabcut_min_fraction: float = 0.01,
                  grabcut_max_fraction: float = 0.99, crop: Optional[CropSpec] = CropSpec(),
                  max_crop_removed: float = MAX_CROP_REMOVED, max_box_fraction: float = MAX_BOX_FRACTION,
                  paired: bool = True, balance: bool = True, mixed_rand_own_class: bool = True,
                  class_names: Optional[Sequence[str]] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> VariantSet:
    """The variant sets of ``samples`` (see the module docstring for filters, pools, balancing, donors).

    ``num_classes``: the class count (default: largest label + 1); every class must have usable images.
    ``variants``: which of :data:`~.variants.VARIANTS` to make. ``seed`` fixes balancing and donors
    (numpy ``Generator`` streams) and GrabCut's k-means. ``crop``: the model's evaluation crop for the
    crop filter (``None``: no crop filter). ``class_names`` only improve error messages. ``progress(done,
    total)`` is called after each sample's foreground step (GrabCut is the slow part).
    """
    samples = list(samples)
    check_ids(samples)
    wanted = _check_variants(variants)
    if num_classes is None:
        labels = [int(s.label) for s in samples if isinstance(s.label, (int, np.integer))]
        num_classes = max(labels) + 1 if labels else 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BackgroundsError(f"num_classes must be a positive integer, got {num_classes!r}")
    if class_names is not None and len(class_names) != num_classes:
        raise BackgroundsError(f"class_names has {len(class_names)} names for {num_classes} classes")
    if not mixed_rand_own_class and MIXED_RAND in wanted and num_classes < 2:
        raise BackgroundsError("MIXED-RAND without the own class needs at least 2 classes")
    if isinstance(grabcut_iterations, bool) or not isinstance(grabcut_iterations, int) or grabcut_iterations < 1:
        raise BackgroundsError(f"grabcut_iterations must be a positive integer, got {grabcut_iterations!r}")
    for name, value in (("max_crop_removed", max_crop_removed), ("max_box_fraction", max_box_fraction)):
        if not 0.0 < float(value) <= 1.0:
            raise BackgroundsError(f"{name} must be in (0, 1], got {value!r}")
    samples = [check_sample(s, num_classes) for s in samples]
    if not samples:
        raise BackgroundsError("no samples")

    need_fg = any(v in FOREGROUND_VARIANTS for v in wanted)
    need_bg = any(v in BACKGROUND_VARIANTS or v in MIXED_VARIANTS for v in wanted)
    counts = {"input": len(samples), **{name: 0 for name in FILTERS}}
    boxes: dict[str, Box] = {}
    foregrounds: dict[str, ForegroundMask] = {}
    base_ok: list[str] = []
    bg_ok: set[str] = set()
    fg_ok: set[str] = set()
    def screen(sample: Sample) -> None:
        """Run the filters on one sample, recording its box, foreground and the pools it may join."""
        height, width = sample.image.shape[:2]
        exact: Optional[ForegroundMask] = None
        if sample.mask is not None:
            exact = mask_foreground(sample.mask)
            if not exact.ok:
                counts["mask_empty"] += 1
                foregrounds[sample.id] = exact
                return
            box = exact.box
        else:
            assert sample.boxes is not None
            if len(sample.boxes) != 1:
                counts["boxes_not_one"] += 1
                return
            box = pixel_box(sample.boxes[0], height, width, where=f"sample {sample.id!r} box 0")
            if box_area(box) == 0:
                counts["box_empty"] += 1
                return
        assert box is not None
        boxes[sample.id] = box
        base_ok.append(sample.id)
        if need_bg:
            if box_image_fraction(box, height, width) <= max_box_fraction:
                bg_ok.add(sample.id)
            else:
                counts["box_too_large"] += 1
        if not need_fg or (paired and need_bg and sample.id not in bg_ok):
            return
        if crop is not None and crop_removed_fraction(box, height, width, crop) >= max_crop_removed:
            counts["crop_removes_box"] += 1
            return
        fg = exact if exact is not None else grabcut_foreground(
            sample.image, box, iterations=grabcut_iterations, min_fraction=grabcut_min_fraction,
            max_fraction=grabcut_max_fraction, seed=seed)
        foregrounds[sample.id] = fg
        if fg.ok:
            fg_ok.add(sample.id)
        else:
            counts["grabcut_failed"] += 1

    for done, sample in enumerate(samples, 1):
        screen(sample)
        if progress is not None:
            progress(done, len(samples))

    by_id = {s.id: s for s in samples}
    if paired:
        pools = {"all": [i for i in base_ok if (not need_bg or i in bg_ok) and (not need_fg or i in fg_ok)]}
        pool_of = {v: "all" for v in wanted}
        donor_pool = "all"
    else:
        pool_of = {v: "base" if v == ORIGINAL else "background" if v in BACKGROUND_VARIANTS else "foreground"
                   for v in wanted}
        used = set(pool_of.values()) | ({"background"} if need_bg else set())
        pools = {name: [i for i in base_ok if name == "base" or (name == "background" and i in bg_ok)
                        or (name == "foreground" and i in fg_ok)] for name in POOLS[1:] if name in used}
        donor_pool = "background"
    per_class_usable = {name: _class_counts(ids, by_id, num_classes) for name, ids in pools.items()}
    minimum = 2 if MIXED_SAME in wanted else 1
    for name, per_class in per_class_usable.items():
        for label, count in per_class.items():
            if count < minimum:
                usable = ", ".join(f"{class_names[c]!r}: {n}" if class_names is not None else f"{c}: {n}"
                                   for c, n in per_class.items())
                removed = ", ".join(f"{k}: {counts[k]}" for k in FILTERS if counts[k]) or "none"
                pool = "" if name == "all" else f" for the {name} variants"
                raise BackgroundsError(
                    f"class {_class_name(label, class_names)} has {count} usable images{pool}, fewer than the "
                    f"{minimum} needed to balance the variants {list(wanted)}; usable per class: {usable} "
                    f"(filtered out: {removed})")
    per_class_n = min(min(pc.values()) for pc in per_class_usable.values()) if balance else None
    selected = {name: _balanced(ids, by_id, num_classes, per_class_n, np.random.default_rng([seed, 0, k]))
                for k, (name, ids) in enumerate(pools.items())}

    donors: dict[int, list[str]] = {c: [] for c in range(num_classes)}
    for i in selected.get(donor_pool, []):
        donors[by_id[i].label].append(i)
    position = {i: k for members in donors.values() for k, i in enumerate(members)}
    rows: list[VariantRow] = []
    for variant in wanted:
        rng = np.random.default_rng([seed, 1, VARIANTS.index(variant)])
        for i in selected[pool_of[variant]]:
            rows.append(_row(variant, by_id[i], foregrounds.get(i),
                             _donor(variant, by_id[i], donors, position, num_classes, mixed_rand_own_class, rng)
                             if variant in MIXED_VARIANTS else None, by_id))

    usable_ids = set().union(*pools.values())
    kept = {row.source_id for row in rows}
    counts.update(usable=len(usable_ids), balanced_out=len(usable_ids - kept), kept=len(kept))
    foreground_pool = pool_of.get(next((v for v in wanted if v in FOREGROUND_VARIANTS), ""), None)
    referenced = kept | {row.background_id for row in rows if row.background_id is not None}
    referenced |= set(selected.get(donor_pool, [])) if need_bg else set()
    return VariantSet(variants=wanted, rows=rows, counts=counts, usable=per_class_usable, per_class=per_class_n,
                      num_classes=num_classes, seed=seed,
                      samples={i: by_id[i] for i in by_id if i in referenced}, boxes=boxes,
                      foregrounds=foregrounds,
                      foreground_ids=list(selected[foreground_pool]) if foreground_pool else [],
                      background_ids=list(selected[donor_pool]) if need_bg else [])


def _check_variants(variants: Sequence[str]) -> tuple[str, ...]:
    if isinstance(variants, str):
        variants = [variants]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise BackgroundsError(f"unknown variants {unknown}; the variants are {list(VARIANTS)}")
    wanted = tuple(dict.fromkeys(variants))
    if not wanted:
        raise BackgroundsError("no variants asked for")
    return wanted


def _class_name(label: int, class_names: Optional[Sequence[str]]) -> str:
    return f"{label} ({class_names[label]!r})" if class_names is not None else str(label)


def _class_counts(ids: Sequence[str], by_id: dict[str, Sample], num_classes: int) -> dict[int, int]:
    counts = {c: 0 for c in range(num_classes)}
    for i in ids:
        counts[by_id[i].label] += 1
    return counts


def _balanced(ids: Sequence[str], by_id: dict[str, Sample], num_classes: int, per_class: Optional[int],
              rng: np.random.Generator) -> list[str]:
    """``per_class`` ids of each class drawn by ``rng`` (all without balancing), in input order."""
    if per_class is None:
        return list(ids)
    order = {i: k for k, i in enumerate(ids)}
    keep: list[str] = []
    for c in range(num_classes):
        members = [i for i in ids if by_id[i].label == c]
        keep += [members[k] for k in rng.permutation(len(members))[:per_class]]
    return sorted(keep, key=order.__getitem__)


def _donor(variant: str, sample: Sample, donors: dict[int, list[str]], position: dict[str, int],
           num_classes: int, own_class: bool, rng: np.random.Generator) -> str:
    """The id of the background donor of ``sample`` for a MIXED variant (never ``sample`` itself);
    ``position``: each donor's index in its class's list."""
    own = position.get(sample.id)

    def others(c: int) -> int:
        return len(donors[c]) - (1 if c == sample.label and own is not None else 0)

    if variant == MIXED_SAME:
        classes = [sample.label]
    elif variant == MIXED_NEXT:
        classes = [(sample.label + 1) % num_classes]
    else:
        classes = [c for c in range(num_classes) if (own_class or c != sample.label) and others(c) > 0]
    c = int(classes[rng.integers(len(classes))]) if classes else sample.label
    if not classes or others(c) == 0:
        raise BackgroundsError(f"sample {sample.id!r}: no background donor for {variant} "
                               f"(classes {classes} have no other usable background)")
    members = donors[c]
    k = int(rng.integers(others(c)))
    if c == sample.label and own is not None and k >= own:
        k += 1                                  # skip the sample itself
    return members[k]


def _row(variant: str, sample: Sample, fg: Optional[ForegroundMask], donor: Optional[str],
         by_id: dict[str, Sample]) -> VariantRow:
    if variant == ORIGINAL:
        method, iterations = None, None
    elif variant in BACKGROUND_VARIANTS:
        method, iterations = "box", None
    else:
        assert fg is not None and fg.ok
        method, iterations = fg.method, fg.iterations
    if variant == ONLY_FG:
        background: Optional[str] = None
    elif donor is not None:
        background = donor
    else:
        background = sample.id
    return VariantRow(output_id=f"{variant}/{sample.id}", variant=variant, source_id=sample.id, label=sample.label,
                      background_id=background,
                      background_label=None if background is None else by_id[background].label,
                      foreground_method=method, grabcut_iterations=iterations)
