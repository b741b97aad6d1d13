"""threedb.robustness: robustness algorithms (attacks, smoothing, verification, robust losses), testable alone."""
