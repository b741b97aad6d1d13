"""The results dashboard: ``threedb dashboard RUN_DIR [RUN_DIR ...]`` (a local web application)."""
