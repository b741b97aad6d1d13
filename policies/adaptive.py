"""Adaptive, failure-seeking search: a closed loop on optuna's TPE sampler.

Each proposal is an optuna trial (ask/tell interface, in-memory study). The study *minimises* the
observed score, and scores are "higher = better for the model" (1.0 correct, 0.0 wrong), so the
sampler concentrates proposals where the model fails. Continuous dimensions are optuna floats on
``[0, 1]``; discrete dimensions are optuna categoricals over the choice indices (TPE models them as
categories), proposed at the centre of their unit-cube bin.

Options:

* ``samples``: the budget (number of proposals overall).
* ``batch`` (default 8): proposals asked together. Batches are **synchronous**: the next batch is
  asked only once every proposal of the current one has been observed, and the results are told to
  optuna in proposal order. ``propose(n)`` hands out the current batch in pieces of at most ``n``
  and returns ``[]`` while waiting. This makes the sequence depend only on seed, options and the
  scores per proposal id, not on the order results arrive in nor on the ``n`` of each call, which
  is what resume replay needs. Keep several (environment, model) pairs in flight to fill workers.
* ``startup`` (default 16): at least this many random trials before TPE takes over (rounded up to
  whole batches, as TPE starts from the first batch asked after ``startup`` results).

The sampler is ``TPESampler(seed=seed, multivariate=True, constant_liar=True)``: multivariate to
model interactions between controls, constant liar so the members of one batch spread out. A NaN
score marks a trial without result (optuna ``FAIL``); it is excluded from the model.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from threedb.controls.params import Choices
from threedb.policies.base import Option, Policy, Proposal
from threedb.policies.space import SearchSpace


class AdaptivePolicy(Policy):
    """Failure-seeking TPE search (optuna)."""

    name = "adaptive"
    options = (
        Option("samples", "number of proposals overall (budget)", minimum=1),
        Option("batch", "proposals outstanding at once", default=8, minimum=1),
        Option("startup", "random trials before TPE", default=16, minimum=0),
    )

    def __init__(self, space: SearchSpace, *, seed: int, **options: Any) -> None:
        super().__init__(space, seed=seed, **options)
        import optuna  # imported lazily: only this policy needs it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=self.config["startup"], multivariate=True,
                constant_liar=True)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self._distributions = {
            f"x{i}": (optuna.distributions.CategoricalDistribution(list(range(len(d.domain.values))))
                      if isinstance(d.domain, Choices) else optuna.distributions.FloatDistribution(0.0, 1.0))
            for i, d in enumerate(space.dimensions)}
        self._batch: list[tuple[Any, Proposal]] = []   # (trial, proposal) of the current batch
        self._handed = 0                                 # how many of the batch were handed out
        self._scores: dict[str, float] = {}              # observed scores of the current batch
        self.history: list[tuple[Proposal, float]] = []  # every observed (proposal, score), in id order

    def total(self) -> int:
        return 1 if self.space.ndim == 0 else self.config["samples"]

    def _point(self, trial: Any) -> tuple[float, ...]:
        point = []
        for i, d in enumerate(self.space.dimensions):
            v = trial.params[f"x{i}"]
            point.append((v + 0.5) / len(d.domain.values) if isinstance(d.domain, Choices) else float(v))
        return tuple(point)

    def _ask_batch(self) -> None:
        size = min(self.config["batch"], self.total() - self._issued)
        self._batch, self._handed, self._scores = [], 0, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
            for _ in range(size):
                trial = self.study.ask(self._distributions)
                self._batch.append((trial, self._make(self._point(trial))))

    def propose(self, n: int) -> list[Proposal]:
        if self._handed == len(self._batch) and len(self._scores) == len(self._batch) \
                and self._issued < self.total():
            self._flush()
            self._ask_batch()
        out = [p for _, p in self._batch[self._handed:self._handed + max(n, 0)]]
        self._handed += len(out)
        return out

    def _flush(self) -> None:
        """Tell optuna the results of the finished batch, in proposal order."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
            for trial, proposal in self._batch:
                score = self._scores[proposal.id]
                if math.isnan(score):
                    self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(trial, score)
                self.history.append((proposal, score))
        self._batch, self._handed, self._scores = [], 0, {}

    def observe(self, proposal_id: str, score: float) -> None:
        handed = {p.id for _, p in self._batch[:self._handed]}
        if proposal_id not in handed:
            raise KeyError(f"{proposal_id!r} is not an outstanding proposal of this policy")
        if proposal_id in self._scores:
            raise ValueError(f"{proposal_id!r} was already observed")
        self._scores[proposal_id] = float(score)
        if len(self._scores) == len(self._batch) and self._issued >= self.total():
            self._flush()  # the last batch: record it so that history/study are complete

    @property
    def exhausted(self) -> bool:
        return self._issued >= self.total() and self._handed == len(self._batch)


__all__ = ["AdaptivePolicy"]
