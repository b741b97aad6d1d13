"""threedb.controls: control base classes, parameter declarations, built-in controls and plugin loading."""
from threedb.controls.base import Control, ImageControl, SceneControl
from threedb.controls.params import Choices, Fixed, Param, Range

__all__ = ["Control", "SceneControl", "ImageControl", "Param", "Fixed", "Range", "Choices"]
