"""Background variants, ImageNet-9 style (Xiao et al.; thesis ch. 2, app. A): what a classifier takes from
the background, measured by swapping, removing and tiling it.

* :mod:`.foreground`: the foreground mask, exact (rendered data) or by GrabCut from one box;
* :mod:`.filters`: the thesis's crop and box-size filters;
* :mod:`.variants`: the eight variants of one image, pure numpy (ORIGINAL, ONLY-BG-B, ONLY-BG-T, NO-FG,
  ONLY-FG, MIXED-SAME, MIXED-RAND, MIXED-NEXT);
* :mod:`.samples` and :mod:`.pipeline`: from labelled samples to balanced variant sets with a manifest and
  filter counts (:func:`make_variants`);
* :mod:`.evaluation`: accuracies, BG-GAP, per-image categories, adversarial backgrounds, the train x test
  accuracy matrix.

Images are ``HxWx3`` uint8, masks ``HxW`` bool, boxes half-open ``(x0, y0, x1, y1)`` pixel ints.
Randomness (balancing, background donors, budgets) comes from numpy ``Generator`` streams of ``seed``.
"""
from .errors import BackgroundsError
from .evaluation import (BG_FG_FOOLS, BG_FG_REQUIRED, BG_FOOLS, BG_IRRELEVANT, BG_REQUIRED, CATEGORIES,
                         AccuracyMatrix, AdversarialBackgrounds, BackgroundSample, ForegroundSample, accuracies,
                         accuracy, accuracy_matrix, adversarial_backgrounds, bg_gap, category, category_counts,
                         image_categories, torch_predictor)
from .filters import MAX_BOX_FRACTION, MAX_CROP_REMOVED, CropSpec, box_image_fraction, crop_removed_fraction
from .foreground import (GRABCUT_ITERATIONS, Box, ForegroundMask, box_area, grabcut_foreground, mask_box,
                         mask_foreground, pixel_box)
from .pipeline import FILTERS, VariantRow, VariantSet, make_variants
from .samples import Sample
from .variants import (BACKGROUND_VARIANTS, FOREGROUND_VARIANTS, MIXED_NEXT, MIXED_RAND, MIXED_SAME, MIXED_VARIANTS,
                       NO_FG, ONLY_BG_B, ONLY_BG_T, ONLY_FG, ORIGINAL, VARIANTS, background_strip, fit_background,
                       mixed, no_fg, only_bg_b, only_bg_t, only_fg, tiled_background)

__all__ = ["AccuracyMatrix", "AdversarialBackgrounds", "BACKGROUND_VARIANTS", "BG_FG_FOOLS", "BG_FG_REQUIRED",
           "BG_FOOLS", "BG_IRRELEVANT", "BG_REQUIRED", "BackgroundSample", "BackgroundsError", "Box", "CATEGORIES",
           "CropSpec", "FILTERS", "FOREGROUND_VARIANTS", "ForegroundMask", "ForegroundSample", "GRABCUT_ITERATIONS",
           "MAX_BOX_FRACTION", "MAX_CROP_REMOVED", "MIXED_NEXT", "MIXED_RAND", "MIXED_SAME", "MIXED_VARIANTS",
           "NO_FG", "ONLY_BG_B", "ONLY_BG_T", "ONLY_FG", "ORIGINAL", "Sample", "VARIANTS", "VariantRow",
           "VariantSet", "accuracies", "accuracy", "accuracy_matrix", "adversarial_backgrounds",
           "background_strip", "bg_gap", "box_area", "box_image_fraction", "category", "category_counts",
           "crop_removed_fraction", "fit_background", "grabcut_foreground", "image_categories", "make_variants",
           "mask_box", "mask_foreground", "mixed", "no_fg", "only_bg_b", "only_bg_t", "only_fg", "pixel_box",
           "tiled_background", "torch_predictor"]
