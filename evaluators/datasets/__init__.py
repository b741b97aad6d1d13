"""Datasets: ``threedb dataset export`` of a run directory, and one reader for rendered and real datasets."""
