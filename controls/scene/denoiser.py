"""Denoiser: OpenImageDenoise on the rendered image."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


class DenoiserControl(SceneControl):
    """Turns Cycles' OpenImageDenoise denoiser on (``enabled: true``, the default, as the original 3DB's
    denoiser control did) or off, whatever ``render.denoise`` says.

    The denoiser uses albedo and normal guides and its accurate prefilter; it removes most Monte
    Carlo noise of low sample counts at some loss of fine texture (and about 0.3 s a render on a CPU).
    """

    name = "denoiser"
    params = (Param("enabled", "bool", True, "denoise the render with OpenImageDenoise"),)

    _SETTINGS = ("use_denoising", "denoiser", "denoising_input_passes", "denoising_prefilter",
                 "denoising_quality")

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        cycles = scene.scene.cycles
        self._saved = {k: getattr(cycles, k) for k in self._SETTINGS if hasattr(cycles, k)}
        enabled = bool(values.get("enabled", True))
        cycles.use_denoising = enabled
        if enabled:
            cycles.denoiser = "OPENIMAGEDENOISE"
            cycles.denoising_input_passes = "RGB_ALBEDO_NORMAL"
            cycles.denoising_prefilter = "ACCURATE"

    def undo(self, scene: "RenderScene") -> None:
        cycles = scene.scene.cycles
        for key, value in self._saved.items():
            setattr(cycles, key, value)
