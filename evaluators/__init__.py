"""threedb.evaluators: model loading, evaluator workers, task evaluators and dataset-consuming robustness jobs."""
