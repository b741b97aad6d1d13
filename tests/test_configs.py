"""Every shipped config loads and validates (assets found, controls resolved), and the quickstart
experiment that `make run` runs has the size its comments promise."""
from __future__ import annotations

from pathlib import Path

import pytest

from threedb.evaluators.training.config import load_train_config
from threedb.policies.registry import make_policy
from threedb.sim.config import load_config
from threedb.sim.experiment import prepare

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAINING = {"quickstart_train.yaml"}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name not in TRAINING))
def test_experiment_config_loads_and_prepares(name):
    prepared = prepare(load_config(CONFIGS / name))
    assert prepared.objects and prepared.environments


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_config_loads(name):
    assert load_train_config(CONFIGS / name).schema.training.epochs >= 1


def test_quickstart_has_704_distinct_jobs():
    experiment = load_config(CONFIGS / "quickstart.yaml")
    prepared = prepare(experiment)
    assert (len(prepared.objects), len(prepared.environments)) == (11, 8)
    points = set()
    for env in prepared.environments:
        for obj in prepared.objects:
            policy = make_policy(experiment.policy, prepared.space, seed=experiment.seed,
                                 pair=f"{env.name}/{obj.asset.uid}")
            while not policy.exhausted:
                points.update(p.point for p in policy.propose(64))
    assert len(points) == 704
