"""Everything a run checks before it makes its run directory or starts a worker.

A config that loads can still be unusable for a run: a label map that is no JSON list, a model whose
weights do not fit, ``pretrained: true`` (a download), a policy option out of range, a batch size of
``abc``. :func:`check_run` finds these in the master's process, on the CPU, so that ``threedb run``
stops with one error line and nothing on disk instead of a worker's traceback after the run began.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threedb.sim.config.loader import display_source
from threedb.sim.errors import ConfigError

#: Most frames one evaluator batch may hold (the master keeps 4x this many renders in memory).
MAX_BATCH_SIZE = 4096


@dataclass
class RunPlan:
    """What the master needs from a checked config."""

    render_only: bool                 #: no model: renders are logged as they arrive
    class_names: list[str]
    output_keys: tuple[str, ...]
    output_type: str
    needs: tuple[str, ...]            #: passes the evaluator reads
    log_images: str
    extra_passes: tuple[str, ...]
    batch_size: int
    loggers: tuple[str, ...]          #: json (always), images, tensorboard
    policies: list[Any]               #: one policy per (environment, object) pair, in walking order


def check_run(prepared: Any, *, load_model_check: bool = True) -> RunPlan:
    """Check ``prepared`` (see :func:`threedb.sim.experiment.prepare`) for a run; raise ConfigError.

    With ``load_model_check`` the model is built once on the CPU (its weights read, a dummy batch run
    against the label map) and the evaluator set up with it, as an evaluator worker will do.
    """
    from threedb.evaluators.base import load_evaluator
    from threedb.evaluators.models import load_label_map
    from threedb.policies.registry import make_policy

    exp = prepared.experiment
    shown = display_source(Path(exp.source))
    if bool(exp.inference) != bool(exp.evaluation):
        raise ConfigError("a run needs both inference: and evaluation: sections (or neither, to only "
                          "render and log)", file=shown, key="evaluation" if exp.inference else "inference")
    render_only = not exp.inference
    base_dir = Path(exp.source).parent
    class_names: list[str] = []
    output_keys: tuple[str, ...] = ()
    output_type, needs = "classes", ()
    if render_only:
        # the objects' class names, in config order: what a dataset exported from this run uses
        class_names = list(dict.fromkeys(o.asset.class_name for o in prepared.objects))
    else:
        evaluator = load_evaluator(exp.evaluation, base_dir=base_dir, file=exp.source)
        evaluator.check_objects([o.asset.uid for o in prepared.objects])
        output_keys, output_type, needs = tuple(evaluator.output_names()), evaluator.output_type, evaluator.needs
    inference = exp.inference or {}
    if inference.get("label_map"):
        path = Path(inference["label_map"])
        class_names = load_label_map(path if path.is_absolute() else base_dir / path, file=shown,
                                     key="inference.label_map")
    batch_size = inference.get("batch_size", 16)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"must be a whole number from 1 to {MAX_BATCH_SIZE}", file=shown,
                          key="inference.batch_size", value=batch_size, expected="e.g. 16")
    logging = exp.logging or {}
    for name in logging.get("extra_passes", ()):
        if not exp.render.wants(name):
            raise ConfigError(f"the {name} pass is kept but not rendered: add {name} to render.passes",
                              file=shown, key="logging.extra_passes", value=name)
    policies = [make_policy(exp.policy, prepared.space, seed=exp.seed, file=exp.source,
                            pair=f"{env.name}/{obj.asset.uid}")
                for env in prepared.environments for obj in prepared.objects]
    if load_model_check and not render_only:   # the costly check last
        _check_model(exp, base_dir)
    return RunPlan(render_only=render_only, class_names=class_names, output_keys=output_keys,
                   output_type=output_type, needs=tuple(needs), log_images=logging.get("log_images", "all"),
                   extra_passes=tuple(logging.get("extra_passes", ())), batch_size=batch_size,
                   loggers=tuple(logging.get("loggers", ("json", "images"))), policies=policies)


def describe_plan(prepared: Any, plan: RunPlan) -> str:
    """What ``threedb run --dry-run`` prints: the jobs a run would make and every control parameter, one
    line each: ``searched`` with its range or choices, or ``fixed`` with its value."""
    from threedb.controls.params import Choices, Fixed, Range

    totals = [policy.total() for policy in plan.policies]
    jobs = str(sum(totals)) if all(t is not None for t in totals) else "open-ended (the policy decides)"
    exp = prepared.experiment
    lines = [f"{jobs} jobs: {len(prepared.environments)} environments x {len(prepared.objects)} objects, policy "
             f"{exp.policy['type']}; " + ("render only (no model)" if plan.render_only else
                                          f"evaluated in batches of {plan.batch_size}"),
             f"search space: {prepared.space.ndim} searched parameters"]
    for spec in exp.controls:
        for name, domain in spec.domains.items():
            if isinstance(domain, Range):
                what = f"searched  [{domain.low:g}, {domain.high:g}]"
            elif isinstance(domain, Choices):
                what = f"searched  {{{', '.join(map(repr, domain.values))}}}"
            else:
                what = f"fixed     {domain.value!r}" if isinstance(domain, Fixed) else repr(domain)
            lines.append(f"  {spec.name}.{name}: {what}")
    return "\n".join(lines)


def _check_model(exp: Any, base_dir: Path) -> None:
    """Build the model and the evaluator as an evaluator worker will, on the CPU, and drop them."""
    from threedb.sim.errors import ThreeDBError
    from threedb.sim.run.evaluator_worker import load

    try:
        load({"inference": exp.inference, "evaluation": exp.evaluation, "base_dir": str(base_dir),
              "config_file": str(exp.source)}, "cpu")
    except ThreeDBError:
        raise
    except Exception as exc:   # user code (a model or evaluator plugin) failed: name it, no traceback
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"the model or evaluator could not be set up: {type(exc).__name__}: {first}",
                          file=display_source(Path(exp.source)), key="inference") from None


__all__ = ["MAX_BATCH_SIZE", "RunPlan", "check_run", "describe_plan"]
