"""threedb.robustness.verification: complete verification of ReLU networks (MILP, MIPVerify style).

The package, one job per module:

* :mod:`.network` -- :class:`Network`, the verifier's view of a model: a chain of dense affine maps,
  ReLUs and max-pools on flat C-order vectors, built exactly from PyTorch (:func:`from_torch`);
* :mod:`.onnx_import` -- the same from an ONNX file (:func:`from_onnx`, the VNN-COMP networks);
* :mod:`.spec` -- :class:`Specification`: an input box and a disjunction of linear output conditions
  describing a counterexample (VNN-COMP convention), e.g. :func:`local_robustness`;
* :mod:`.vnnlib` -- VNN-LIB property files into specifications (:func:`parse_vnnlib`,
  :func:`check_instance`);
* :mod:`.bounds` -- interval and symbolic bounds on every layer;
* :mod:`.milp` -- the mixed-integer encoding (HiGHS);
* :mod:`.verifier` -- the complete verifier (attack, bounds, tightening, MILP, confirmed answer);
* :mod:`.distortion` -- minimum adversarial distortion (L-inf, L1; one MILP, or bisection by verification).
"""
from threedb.robustness.verification.network import (Affine, Layer, MaxPool, Network, NetworkError, ReLU,
                                                      TorchNetwork, compose, from_torch, maxpool_groups,
                                                      probe_affine)
from threedb.robustness.verification.onnx_import import from_onnx
from threedb.robustness.verification.spec import Specification, SpecificationError, local_robustness
from threedb.robustness.verification.vnnlib import check_instance, parse_vnnlib

from threedb.robustness.verification.bounds import (interval_bounds, output_lower_bounds, symbolic_bounds,
                                                     unstable_counts)
from threedb.robustness.verification.distortion import DistortionResult, bisect_distortion, minimum_distortion
from threedb.robustness.verification.milp import NetworkModel
from threedb.robustness.verification.verifier import VerificationResult, VerifierOptions, verify

__all__ = [
    # networks
    "Affine", "Layer", "MaxPool", "Network", "NetworkError", "ReLU", "TorchNetwork", "compose", "from_onnx",
    "from_torch", "maxpool_groups", "probe_affine",
    # specifications
    "Specification", "SpecificationError", "check_instance", "local_robustness", "parse_vnnlib",
    # bounds, MILP, answers
    "DistortionResult", "NetworkModel", "VerificationResult", "VerifierOptions", "bisect_distortion",
    "interval_bounds", "minimum_distortion", "output_lower_bounds", "symbolic_bounds", "unstable_counts", "verify",
]
