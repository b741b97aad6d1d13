"""From a validated config to what render jobs need: assets selected and checked, the search space.

Everything that can be wrong with the inputs is found here, before any render worker starts.
"""
from __future__ import annotations

from dataclasses import dataclass

from threedb.policies.space import SearchSpace
from threedb.sim.assets import AssetCatalog, EnvironmentAsset, check_environment, check_mesh, load_catalog
from threedb.sim.config import Experiment
from threedb.sim.jobs import PreparedObject


@dataclass(frozen=True)
class PreparedExperiment:
    """An experiment whose assets exist and load: ready to be turned into jobs."""

    experiment: Experiment
    catalog: AssetCatalog
    objects: list[PreparedObject]
    environments: list[EnvironmentAsset]
    space: SearchSpace


def prepare(experiment: Experiment) -> PreparedExperiment:
    """Select the experiment's objects and environments and check every file (raises AssetError)."""
    cfg = experiment.assets
    catalog = load_catalog(cfg.root)
    objects = []
    for asset in catalog.select_objects(list(cfg.objects) if cfg.objects != "all" else "all"):
        normalization = check_mesh(asset, cfg.object_size)  # validates even when not normalising
        objects.append(PreparedObject(asset, normalization if cfg.normalize else None,
                                      cfg.normalize, cfg.object_size))
    environments = catalog.select_environments(
        list(cfg.environments) if cfg.environments != "all" else "all")
    for env in environments:
        check_environment(env)
    return PreparedExperiment(experiment, catalog, objects, environments, SearchSpace(experiment.controls))
