"""threedb.policies: the search space and the search policies (grid, random, quasi-random, adaptive)."""
