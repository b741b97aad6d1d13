"""``threedb bg-variants CONFIG``: ImageNet-9-style background variants of a dataset (docs/backgrounds.md).

:mod:`.config` (schema), :mod:`.data` (dataset -> samples), :mod:`.writer` (variant datasets),
:mod:`.scoring` (models on the variants), :mod:`.report` (report.json, plots, image grids),
:mod:`.runner` (the job), :mod:`.cli` (the subcommand). The image operations are
:mod:`threedb.robustness.backgrounds`.
"""
