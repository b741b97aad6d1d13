"""Dataset projection (thesis ch. 4, app. C): the mixture of auxiliary source groups closest to a target
dataset in unbiased MMD^2, per target class, and a projected dataset drawn by its weights.

* :mod:`.mmd`: the RBF kernel, the median heuristic, the unbiased mixture MMD^2 precomputed as
  ``w^T A w - 2 b^T w + c`` (the exact estimator is in its docstring) and a direct reference;
* :mod:`.solvers`: projection onto the simplex, projected gradient descent, the damped active-set method;
* :mod:`.project`: :func:`project_dataset` over features / labels / group ids, and :func:`resample`;
* :mod:`.features`: a fixed random convolutional encoder and a forward-hook feature extractor.

Pure torch: nothing here touches the simulator; a job extracts features and group ids and calls in.
"""
from .errors import ProjectionError
from .features import RandomConvEncoder, extract_features, penultimate_features
from .mmd import (MixtureMMD, bandwidth_from_scale, median_bandwidth, mixture_mmd, mixture_mmd2_direct,
                  mmd2_unbiased, rbf_kernel)
from .project import ClassProjection, ProjectionResult, Resampled, project_dataset, resample
from .solvers import SOLVERS, SolverResult, active_set, project_simplex, projected_gradient_descent

__all__ = ["ClassProjection", "MixtureMMD", "ProjectionError", "ProjectionResult", "RandomConvEncoder", "Resampled",
           "SOLVERS", "SolverResult", "active_set", "bandwidth_from_scale", "extract_features", "median_bandwidth",
           "mixture_mmd", "mixture_mmd2_direct", "mmd2_unbiased", "penultimate_features", "project_dataset",
           "project_simplex", "projected_gradient_descent", "rbf_kernel", "resample"]
