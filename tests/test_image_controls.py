"""Image controls: the 19 ImageNet-C corruptions at any size, and the depth-aware fog and defocus.

Fast (no Blender): natural test images come from scikit-image's bundled photos.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data, transform

from threedb.controls.image import imagenet_c
from threedb.controls.image.corruption import CorruptionControl
from threedb.controls.image.depth import DepthDefocusControl, DepthFogControl, disc_kernel
from threedb.controls.image.imagenet_c import CORRUPTION_NAMES, corrupt
from threedb.controls.registry import resolve_control
from threedb.sim.errors import ConfigError

#: Severity steps s -> s+1 where ImageNet-C's constants do not increase the mean absolute change on
#: a natural image (measured ratios of the change at s+1 to that at s, astronaut at 128 px):
#: saturate 2->3 (0.54: severities 1-2 desaturate, 3-5 saturate), frost 3->4 (0.97: the image's
#: weight drops 0.7 -> 0.65 at the same frost weight), fog 3->4 (0.98: same strength, finer fractal),
#: glass_blur 3->4 (~1.0: 3 shuffles of 2 px vs 2 of 3 px), snow 2->3 (0.98-1.03 by seed).
NON_MONOTONE_STEPS = {("saturate", 2), ("frost", 3), ("fog", 3), ("glass_blur", 3), ("snow", 2)}

RESOLUTIONS = [(64, 64), (96, 128), (300, 200)]


def natural(height: int, width: int) -> np.ndarray:
    """The astronaut photo resized to ``height`` x ``width`` (uint8 RGB)."""
    return (transform.resize(data.astronaut(), (height, width), anti_aliasing=True) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> dict[tuple[int, int], np.ndarray]:
    return {size: natural(*size) for size in [*RESOLUTIONS, (128, 128), (8, 12)]}


def mean_change(image: np.ndarray, name: str, severity: int, seeds: tuple[int, ...] = (0, 1)) -> float:
    return float(np.mean([np.abs(corrupt(image, name, severity, np.random.default_rng(seed)).astype(float)
                                 - image).mean() for seed in seeds]))


# --------------------------------------------------------------------------- ImageNet-C corruptions

def test_the_19_names() -> None:
    assert len(set(CORRUPTION_NAMES)) == 19
    assert CorruptionControl.param("corruption_name").choices == ("none", *CORRUPTION_NAMES)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_keeps_shape_and_dtype_and_changes_the_image(name: str, images: dict) -> None:
    for size in RESOLUTIONS:
        image = images[size]
        for severity in (1, 5):
            out = corrupt(image, name, severity, np.random.default_rng(0))
            assert out.shape == image.shape and out.dtype == np.uint8, (size, severity)
            assert np.any(out != image), (size, severity)
    tiny = images[(8, 12)]  # the smallest render the settings allow
    assert corrupt(tiny, name, 5, np.random.default_rng(0)).shape == tiny.shape


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_change_grows_with_severity(name: str, images: dict) -> None:
    image = images[(128, 128)]
    change = [mean_change(image, name, s) for s in imagenet_c.SEVERITIES]
    assert change[4] > change[0], change
    for s in (1, 2, 3, 4):
        if (name, s) not in NON_MONOTONE_STEPS:
            assert change[s] > change[s - 1], (s, change)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_deterministic_given_the_seed_and_global_state_untouched(name: str, images: dict) -> None:
    image = images[(64, 64)]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = corrupt(image, name, 3, np.random.default_rng(7))
    assert np.array_equal(first, corrupt(image, name, 3, np.random.default_rng(7)))
    assert np.array_equal(np.random.get_state()[1], before)


def test_control_none_and_defaults(images: dict) -> None:
    image = images[(64, 64)]
    control = CorruptionControl()
    assert control.apply(image, {}, {}, np.random.default_rng(0)) is image
    out = control.apply(image, {"corruption_name": "fog", "severity": 2}, {}, np.random.default_rng(0))
    assert np.array_equal(out, corrupt(image, "fog", 2, np.random.default_rng(0)))


def test_bad_arguments_are_refused(images: dict) -> None:
    image = images[(64, 64)]
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(image, "gausian_noise", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity"):
        corrupt(image, "fog", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        corrupt(image.astype(np.float32), "fog", 1, np.random.default_rng(0))


def test_unknown_corruption_in_a_config_suggests_the_closest() -> None:
    entry = {"type": "corruption", "corruption_name": "gausian_noise"}
    with pytest.raises(ConfigError, match="gaussian_noise"):
        resolve_control(entry, key="controls[0]", file=None, base_dir=Path("."))


def test_registry_resolves_the_image_controls() -> None:
    for name, cls in [("corruption", CorruptionControl), ("depth_fog", DepthFogControl),
                      ("depth_defocus", DepthDefocusControl), ("imagenet_c", CorruptionControl)]:
        spec = resolve_control({"type": name} if name != "imagenet_c" else
                               {"module": "threedb.controls.imagenet_c"},
                               key="controls[0]", file=None, base_dir=Path("."))
        assert spec.cls is cls and cls.__doc__
        for p in cls.params:
            assert p.check_value(p.default) == p.default


def _shuffle_reference(x: np.ndarray, offsets: np.ndarray, delta: int) -> np.ndarray:
    """ImageNet-C's per-pixel loop, verbatim (its tuple 'swap' of numpy views copies one way)."""
    x = x.copy()
    for h in range(x.shape[0] - delta, delta, -1):
        for w in range(x.shape[1] - delta, delta, -1):
            dy, dx = offsets[h, w]
            x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]
    return x


def test_glass_blur_shuffle_matches_imagenet_c_loop() -> None:
    rng = np.random.default_rng(3)
    for delta, (height, width) in [(1, (20, 9)), (2, (17, 23)), (3, (30, 30)), (4, (12, 40)), (4, (5, 5))]:
        x = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        offsets = rng.integers(-delta, delta, (height, width, 2))
        assert np.array_equal(imagenet_c._local_shuffle(x, offsets, delta), _shuffle_reference(x, offsets, delta))


def test_zoom_blur_matches_the_package(images: dict) -> None:
    from PIL import Image

    package = imagenet_c._library().corruption_dict["zoom_blur"]
    image = images[(96, 128)][:50, :70]
    for severity in (1, 5):
        ours = corrupt(image, "zoom_blur", severity, np.random.default_rng(0))
        theirs = np.rint(np.asarray(package(Image.fromarray(image), severity)))
        assert np.abs(ours - theirs).max() <= 1


def test_frost_picture_scales_with_the_image() -> None:
    """Native scale at ImageNet-C's 224 px, proportionally smaller below, and always covering."""
    assert imagenet_c.frost_scale((224, 224), (600, 900)) == 1.0
    assert imagenet_c.frost_scale((64, 96), (600, 900)) == pytest.approx(64 / 224)
    assert imagenet_c.frost_scale((300, 200), (315, 560)) == pytest.approx(300 / 315)
    assert imagenet_c.frost_scale((2000, 200), (315, 560)) == pytest.approx(2000 / 315)


# --------------------------------------------------------------------------- depth-aware controls

def _depth_ramp(height: int = 64, width: int = 48) -> np.ndarray:
    """Depth growing down the image from 1 to 9 scene units, with the top 8 rows background (inf)."""
    depth = np.repeat(np.linspace(1.0, 9.0, height, dtype=np.float32)[:, None], width, axis=1)
    depth[:8] = np.inf
    return depth


def test_depth_fog_grows_with_distance_and_background_is_fog_colour() -> None:
    image = natural(64, 48)
    depth = _depth_ramp()
    values = {"density": 0.3, "brightness": 0.5, "red": 1.0, "green": 0.8, "blue": 0.6}
    out = DepthFogControl().apply(image, values, {"depth": depth}, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    fog = np.round(np.array([1.0, 0.8, 0.6]) * 0.5 * 255)
    assert np.abs(out[:8].astype(float) - fog).max() <= 1
    change = np.abs(out.astype(float) - image).mean(axis=(1, 2))
    assert change[12:20].mean() < change[30:38].mean() < change[56:64].mean()


def test_depth_fog_start_and_zero_density() -> None:
    image = natural(64, 48)
    depth = _depth_ramp()
    fog = DepthFogControl()
    out = fog.apply(image, {"density": 1.0, "start": 5.0}, {"depth": depth}, np.random.default_rng(0))
    near = depth < 5.0
    assert np.array_equal(out[near], image[near]) and np.any(out[~near] != image[~near])
    assert fog.apply(image, {"density": 0.0}, {"depth": depth}, np.random.default_rng(0)) is image
    with pytest.raises(ValueError, match="depth"):
        fog.apply(image, {}, {}, np.random.default_rng(0))


def test_depth_defocus_sharp_at_focus_blurred_far() -> None:
    image = natural(64, 48)
    depth = np.full((64, 48), 3.0, dtype=np.float32)
    depth[32:] = 12.0
    depth[:4] = np.inf
    values = {"focus_distance": 3.0, "strength": 2.0, "max_radius": 6.0}
    out = DepthDefocusControl().apply(image, values, {"depth": depth}, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out[4:32].astype(int) - image[4:32]).max() <= 1  # on the focal plane
    def detail(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a.astype(float), axis=1)).mean())
    assert detail(out[40:]) < 0.7 * detail(image[40:])  # far: blurred
    assert detail(out[:4]) < 0.7 * detail(image[:4])  # background: treated as far


def test_depth_defocus_no_blur_when_everything_in_focus() -> None:
    image = natural(32, 32)
    depth = np.full((32, 32), 2.0, dtype=np.float32)
    control = DepthDefocusControl()
    out = control.apply(image, {"focus_distance": 2.0}, {"depth": depth}, np.random.default_rng(0))
    assert out is image
    assert np.isclose(disc_kernel(2.5).sum(), 1.0)
