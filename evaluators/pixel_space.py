"""A loaded model as a function of images in [0, 1]: what every robustness job attacks or certifies.

``pixel_model(loaded)`` moves the ``normalization`` of an ``inference:`` mapping inside the model
(:class:`threedb.robustness.models.Normalized`) and returns the preprocessing that is left (resize to
the model resolution, scale to [0, 1]), so budgets are in pixel units as in the papers.
"""
from __future__ import annotations

from torch import nn

from threedb.evaluators.models import LoadedModel, ModelError
from threedb.evaluators.preprocess import Preprocess
from threedb.robustness.models import Normalized


def pixel_model(loaded: LoadedModel) -> tuple[nn.Module, Preprocess]:
    """``(model of [0, 1] NCHW images, preprocessing to [0, 1] at the model resolution)``.

    Only torch modules qualify (attacks need gradients): TorchScript and ONNX files are refused
    with a message saying so.
    """
    if not isinstance(loaded.model, nn.Module) or loaded.kind in ("onnx",):
        raise ModelError(f"{loaded.source}: robustness jobs need a torch module (an {loaded.kind} model gives "
                         "no input gradients); load the architecture with module:/class: and weights:")
    pre = loaded.preprocess
    model = Normalized(loaded.model, pre.mean, pre.std).to(loaded.device).eval()
    return model, Preprocess(None, None, pre.resolution)
