"""``threedb project``: dataset projection (thesis ch. 4; docs/projection.md). The mixture of source groups
(classes, k-means clusters of features, or render groups: environment, object, binned control parameters)
closest to a target dataset in unbiased MMD^2, per target class, in a random or a model's feature space;
written as a robustness report with the weights, a resampled training set drawn by them, and a
``threedb run`` config that renders more of the heavily weighted render groups.

Modules: :mod:`.config` (the job config), :mod:`.data` (target and source datasets, render metadata),
:mod:`.groups` (group ids), :mod:`.features` (feature spaces), :mod:`.runner` (the job, resumable per
class), :mod:`.resampled` (the resampled dataset), :mod:`.render_more` (the closed loop),
:mod:`.report` (report.json and plots)."""
