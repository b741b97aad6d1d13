"""``threedb certify``: randomized-smoothing certification of a model on a dataset (classification,
segmentation, probabilistic local equivalence) and ``threedb certify analyze`` of Cohen-format TSV logs,
written as a robustness report (docs/certify.md)."""
