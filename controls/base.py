"""Base classes of controls: what a control declares and the steps it implements.

A *scene control* changes the Blender scene before a render and undoes the change exactly
afterwards; an *image control* transforms the rendered image. Both declare their parameters as
:class:`~threedb.controls.params.Param` tuples, which the config validator, the search policies
and ``threedb controls`` all read.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from threedb.controls.params import Param

if TYPE_CHECKING:  # the scene type lives in the renderer, which only render workers import
    from threedb.sim.render.scene import RenderScene


class Control:
    """Common part of every control: a registry name, a docstring and parameter declarations."""

    #: Name used in configs (``type: <name>``) and listings.
    name: ClassVar[str] = ""
    #: Declared parameters, in the order they are listed.
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, instance_name: str | None = None) -> None:
        self.instance_name = instance_name or self.name

    @classmethod
    def param(cls, name: str) -> Param:
        """The declaration of parameter ``name``."""
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.params}


class SceneControl(Control):
    """A control applied inside Blender before rendering and undone after it.

    ``apply`` must record whatever it changes so that ``undo`` restores the scene exactly.
    """

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def undo(self, scene: "RenderScene") -> None:
        raise NotImplementedError


class ImageControl(Control):
    """A control applied to the rendered image (``uint8`` HxWx3), optionally using other passes."""

    def apply(self, image: np.ndarray, values: Mapping[str, Any], passes: Mapping[str, np.ndarray],
              rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError
