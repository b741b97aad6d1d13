"""The robustness-function framework of Tibo et al. (seed 002): sampling estimators of ``R_Q(x, eps)``,
robustness functions ``rho = H(R_Q) * G`` and scores, the margin-curve (R2) evaluation and a WAE for R4."""
from threedb.robustness.framework.errors import FrameworkError
from threedb.robustness.framework.functions import (RobustnessFunction, Score, data_function, margin_function,
                                                    r2_function, r4_function, robustness_score, uniform_inputs)
from threedb.robustness.framework.margin import (MarginResult, attack_candidates, boundary_search, margin_curve,
                                                 margin_evaluation)
from threedb.robustness.framework.perturbations import (BasicRobustness, DataNeighbours, OnManifold,
                                                        Perturbations, UniformBall, basic_robustness)
from threedb.robustness.framework.losses import generator_loss, r2_loss, r4_loss
from threedb.robustness.framework.wae import WAE, imq_mmd2, manifold_samples, train_wae, wae_loss

__all__ = ["FrameworkError", "RobustnessFunction", "Score", "data_function", "margin_function", "r2_function",
           "r4_function", "robustness_score", "uniform_inputs", "MarginResult", "attack_candidates",
           "boundary_search", "margin_curve", "margin_evaluation", "BasicRobustness", "DataNeighbours",
           "OnManifold", "Perturbations", "UniformBall", "basic_robustness", "WAE", "imq_mmd2",
           "manifold_samples", "train_wae", "wae_loss", "generator_loss", "r2_loss", "r4_loss"]
