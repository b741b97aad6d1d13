"""Every shipped config loads and validates (assets found, controls resolved), and the quickstart
experiment that `make run` runs has the size its comments promise."""
from __future__ import annotations

from pathlib import Path

import pytest

from threedb.evaluators.attack.config import load_attack_config
from threedb.evaluators.certify.config import load_certify_config
from threedb.evaluators.training.config import load_train_config
from threedb.evaluators.verify.config import load_verify_config
from threedb.policies.registry import make_policy
from threedb.sim.config import load_config
from threedb.sim.config.loader import load_chain
from threedb.sim.experiment import prepare

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def kind(path: Path) -> str:
    """What a shipped config is for, from its merged top-level keys: a robustness job (``attacks:``,
    ``smoothing:``, ``verification:``), a training (``training:`` + ``output:``), or an experiment of ``threedb run``/``render``."""
    data = load_chain(path).data
    if "attacks" in data:
        return "attack"
    if "training" in data and "output" in data:
        return "training"
    if "smoothing" in data and "output" in data:
        return "certify"
    if "verification" in data and "output" in data:
        return "verify"
    if "groups" in data and "target" in data and "output" in data:
        return "project"
    if "variants" in data and "foreground" in data and "output" in data:
        return "bg-variants"
    return "experiment"


KINDS = {p.name: kind(p) for p in sorted(CONFIGS.glob("*.yaml"))}


def of_kind(wanted: str) -> list[str]:
    return [name for name, k in KINDS.items() if k == wanted]


@pytest.mark.parametrize("name", of_kind("experiment"))
def test_experiment_config_loads_and_prepares(name):
    prepared = prepare(load_config(CONFIGS / name))
    assert prepared.objects and prepared.environments


@pytest.mark.parametrize("name", of_kind("training"))
def test_training_config_loads(name):
    assert load_train_config(CONFIGS / name).schema.training.epochs >= 1


@pytest.mark.parametrize("name", of_kind("attack"))
def test_attack_config_loads(name):
    assert load_attack_config(CONFIGS / name).schema.attacks


@pytest.mark.parametrize("name", of_kind("certify"))
def test_certify_config_loads(name):
    assert load_certify_config(CONFIGS / name).schema.smoothing.n >= 1


@pytest.mark.parametrize("name", of_kind("verify"))
def test_verify_config_loads(name):
    assert load_verify_config(CONFIGS / name).schema.verification.eps >= 0


@pytest.mark.parametrize("name", of_kind("project"))
def test_project_config_loads(name):
    from threedb.evaluators.project.config import load_project_config

    assert load_project_config(CONFIGS / name).schema.groups.type


@pytest.mark.parametrize("name", of_kind("bg-variants"))
def test_bg_variants_config_loads(name):
    from threedb.evaluators.bg_variants.config import load_bg_variants_config

    assert load_bg_variants_config(CONFIGS / name).schema.variants


def test_every_kind_is_shipped():
    assert {"experiment", "training", "attack", "certify", "verify", "project", "bg-variants"} <= set(KINDS.values())


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


def test_certify_scene_quickstart_has_240_renders():
    """configs/certify_scene_quickstart.yaml: its smoothing policy builds; 2 objects x 3 base points x 40."""
    experiment = load_config(CONFIGS / "certify_scene_quickstart.yaml")
    prepared = prepare(experiment)
    policy = make_policy(experiment.policy, prepared.space, seed=experiment.seed)
    assert policy.name == "smoothing" and len(policy.bases) == 3
    assert len(prepared.objects) * len(prepared.environments) * policy.total() == 240
