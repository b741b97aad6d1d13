"""Adversarial training objectives (pure torch): what one training step minimises.

Every objective is called as ``objective(model, images, labels) -> (loss, logits)``:

* ``images`` are in ``[0, 1]`` (``NxCxHxW``; normalisation lives inside ``model``, see
  :class:`threedb.robustness.models.Normalized`), so ``eps`` is in pixel units as in the papers;
* ``labels`` are class indices with the shape of the logits minus their class dimension 1: ``N`` for a
  classifier (logits ``NxK``), ``NxHxW`` masks for a segmenter (logits ``NxKxHxW``). Every loss here is
  written over "class dimension 1, everything else averaged", so one objective serves both tasks: the
  cross-entropy is the mean over examples (classification) or over all pixels of the batch
  (segmentation, as :func:`torch.nn.functional.cross_entropy` does); the TRADES KL divergence is
  summed over classes and **averaged** over examples / pixels (``batchmean`` for classifiers; for a
  segmenter the per-pixel mean, so ``beta`` keeps the classifier range 1..10 - summing over a HxW map
  as seed 000 does equals ``beta_sum = beta_mean / (H W)``);
* ``loss`` is the scalar to minimise; ``logits`` are those of the batch the task loss was taken on
  (the adversarial batch for ``pgd``/``fgsm``/``fbf``/``fbf_trades``, the clean batch for ``trades``),
  for the loop's running training accuracy.

**Mode.** Adversarial examples are generated with the model in ``eval()`` mode (restored afterwards):
the inner maximisation then attacks the deterministic function that is evaluated (no dropout), and its
extra forward passes do not move the batch-norm running statistics towards intermediate attack points
(TRADES' reference procedure; Madry et al. and Wong et al. attack in train mode, which differs only
through batch-norm and dropout). The loss the optimiser sees is computed in the mode the loop set
(``train()``).

**Randomness** (random starts, TRADES' initial noise) comes from the objective's own generator; the
training loop calls :meth:`AdversarialObjective.reseed` at every epoch start (seeded from the run's
seed and the epoch) so a resumed run repeats the uninterrupted one exactly.

**Progress.** The loop calls :meth:`AdversarialObjective.set_progress` with the fraction of training
done before every step; with ``eps_ramp: r`` the budget grows linearly from ``eps_start`` (default ~0)
to ``eps`` over the first fraction ``r`` of training (thesis ch. 6: "eps ramped from 0.01 over the
first half"), and step sizes scale with it.

**ReLU stability** (:class:`ReLUStabilityTraining`, ``relu_stability``; thesis ch. 6, Xiao et al.
2019): PGD training plus ``rs_weight`` times the RS loss of :mod:`threedb.robustness.relu_stability`
on the clean batch's ``rs_eps``-boxes, plus an L1 weight penalty; ``pgd`` takes the same ``l1`` (the
thesis' control: adversarial training + L1, then pruning).

**Gaussian noise augmentation** (:class:`GaussianNoiseTraining`, ``gaussian``) is not adversarial: it
trains on ``x + N(0, sigma^2 I)`` (fresh noise per batch from the same kind of seeded generator, no
clamping), the base models randomized smoothing (:mod:`threedb.robustness.smoothing`) certifies.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
from torch import nn
from torch.nn import functional as F

from threedb.robustness.attacks.base import (AttackError, clip_to_threat, eval_mode, normalized_gradient,
                                             random_in_ball)
from threedb.robustness.relu_stability import MODES, l1_norm, preactivation_bounds, rs_loss, unstable_counts
from threedb.robustness.smoothing.statistics import check_sigma

Norm = Literal["linf", "l2"]



def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(p) || softmax(q))`` summed over classes (dim 1), averaged over everything else."""
    log_p, log_q = F.log_softmax(logits_p, dim=1), F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def _input_gradient(loss_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_of(x)
        (grad,) = torch.autograd.grad(loss, x)
    return grad.detach()


def _task_loss_sum(model: nn.Module, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    # Summed (not averaged) so the gradient of each example does not depend on the batch size;
    # sign / L2-normalised steps ignore the scale anyway.
    return lambda x: F.cross_entropy(model(x), y, reduction="sum")


class SeededObjective:
    """An objective with its own random stream: one ``torch.Generator`` per device, created from the
    current seed on first use; the loop calls :meth:`reseed` at every epoch start (resume stays exact)."""

    def __init__(self, *, seed: int = 0) -> None:
        self._seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        """Restart the objective's random stream (the loop calls this at every epoch start)."""
        self._seed = int(seed)
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        """The objective's generator on ``device`` (created from the current seed on first use)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[key]


class AdversarialObjective(SeededObjective):
    """Shared parts: budget (``eps``, ``norm``), ``eps_ramp``, the seeded generator, progress."""

    name = "adversarial"

    def __init__(self, *, eps: float, norm: Norm = "linf", eps_ramp: float = 0.0, label_smoothing: float = 0.0,
                 seed: int = 0, eps_start: float = 0.0) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be linf or l2, got {norm!r}")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0 or (norm == "linf" and eps > 1):
            raise ValueError(f"eps must be a number in [0, 1] (pixel units, 8/255 = {8 / 255:.4f}), got {eps!r}")
        if not 0.0 <= eps_ramp <= 1.0:
            raise ValueError(f"eps_ramp must be a fraction of training in [0, 1], got {eps_ramp}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not isinstance(eps_start, (int, float)) or not 0.0 <= eps_start <= eps:
            raise ValueError(f"eps_start must be a number in [0, eps = {eps}], got {eps_start!r}")
        self.eps, self.norm, self.eps_ramp = float(eps), norm, float(eps_ramp)
        self.eps_start = float(eps_start)
        super().__init__(seed=seed)
        self.label_smoothing = float(label_smoothing)
        self.progress = 1.0

    # -- loop hooks ---------------------------------------------------------------------------
    def set_progress(self, fraction: float) -> None:
        """Tell the objective how much of training is done (``0..1``); drives ``eps_ramp``."""
        self.progress = min(max(float(fraction), 0.0), 1.0)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The cross-entropy the optimiser minimises (mean over examples / pixels, label smoothing)."""
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    # -- budget -------------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """The fraction of ``eps`` in force now (1 without ramp or after it; ``eps_start / eps`` at the
        start of a ramp)."""
        if self.eps_ramp <= 0 or self.eps <= 0:
            return 1.0
        ramp = min(1.0, self.progress / self.eps_ramp)
        start = self.eps_start / self.eps
        return start + (1.0 - start) * ramp

    @property
    def current_eps(self) -> float:
        return self.eps * self.scale

    def describe(self) -> dict:
        """Settings for logs and model cards."""
        out = {"name": self.name, "eps": self.eps, "norm": self.norm, "eps_ramp": self.eps_ramp,
               "label_smoothing": self.label_smoothing}
        if self.eps_start:
            out["eps_start"] = self.eps_start
        return out

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def pgd_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                step_size: float, norm: Norm, random_start: bool,
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """The last iterate of ``steps`` ascent steps on the summed cross-entropy, in the ball and the box.

    ``steps=1`` with ``random_start`` is FBF's example, without it FGSM's (step ``eps``).
    """
    if random_start:
        if generator is None:
            raise AttackError("a random start needs a generator")
        x_adv = random_in_ball(x, norm, eps, generator)
    else:
        x_adv = x.clone()
    loss_of = _task_loss_sum(model, y)
    with eval_mode(model):
        for _ in range(steps):
            grad = _input_gradient(loss_of, x_adv)
            x_adv = clip_to_threat(x_adv + step_size * normalized_gradient(grad, norm), x, norm, eps)
    return x_adv.detach()


def trades_example(model: nn.Module, x: torch.Tensor, clean_logits: torch.Tensor, *, eps: float, steps: int,
                   step_size: float, generator: torch.Generator) -> torch.Tensor:
    """TRADES' inner maximisation: from ``x + 0.001 N(0, I)``, ``steps`` L-inf sign steps of ``step_size``
    on ``KL(f(x) || f(x''))`` (``clean_logits`` = ``f(x)``, held fixed), projected onto the ball and box."""
    target = clean_logits.detach()
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = clip_to_threat(x + 0.001 * noise, x, "linf", eps)
    with eval_mode(model):
        for _ in range(steps):
            grad = _input_gradient(lambda z: kl_divergence(target, model(z)) * z.shape[0], x_adv)
            x_adv = clip_to_threat(x_adv + step_size * grad.sign(), x, "linf", eps)
    return x_adv.detach()


class PGDTraining(AdversarialObjective):
    """Madry et al. (2018) min-max training: ``steps`` of PGD from a random start in the ball (step
    ``step_size``, default ``2.5 eps / steps``), then the cross-entropy on the adversarial batch, plus
    ``l1`` times ``sum |w|`` over the weight matrices and kernels (thesis ch. 6: 2e-5 on MNIST)."""

    name = "pgd"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 7, step_size: float | None = None,
                 norm: Norm = "linf", random_start: bool = True, eps_ramp: float = 0.0,
                 label_smoothing: float = 0.0, eps_start: float = 0.0, l1: float = 0.0) -> None:
        super().__init__(eps=eps, norm=norm, eps_ramp=eps_ramp, label_smoothing=label_smoothing,
                         eps_start=eps_start)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not isinstance(l1, (int, float)) or l1 < 0:
            raise ValueError(f"l1 must be a number >= 0, got {l1!r}")
        self.steps, self.random_start = int(steps), bool(random_start)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.l1 = float(l1)

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """``l1 * sum |w|`` (0 without ``l1``)."""
        return self.l1 * l1_norm(model) if self.l1 > 0 else 0.0

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd_example(model, x, y, eps=self.current_eps, steps=self.steps,
                           step_size=self.step_size * self.scale, norm=self.norm,
                           random_start=self.random_start, generator=self.generator(x.device))

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(self.adversarial(model, images, labels))
        return self.task_loss(logits, labels) + self.penalty(model), logits

    def describe(self) -> dict:
        out = {**super().describe(), "steps": self.steps, "step_size": self.step_size,
               "random_start": self.random_start}
        if self.l1:
            out["l1"] = self.l1
        return out


class ReLUStabilityTraining(PGDTraining):
    """Training for ReLU stability (thesis ch. 6, Xiao et al. 2019): the PGD loss of
    :class:`PGDTraining` (L-inf; defaults as the thesis' MNIST setting: eps ramped from ``eps_start``
    (default 0.01, or eps if smaller) over the first half) plus ``rs_weight`` times the RS loss (``sum over ReLUs of -tanh(1 + l_hat
    u_hat)``, averaged over the batch) of the clean images' ``rs_eps``-boxes (default ``eps``, not
    ramped) with ``rs_mode`` bounds (:mod:`threedb.robustness.relu_stability`), plus ``l1 * sum |w|``.

    The network must be a chain :func:`~threedb.robustness.relu_stability.relu_chain` reads. The
    batch means of the RS loss and of the unstable-ReLU count (of the same bounds) are kept per epoch
    (:meth:`epoch_summary`) for the training log.
    """

    name = "relu_stability"

    def __init__(self, *, eps: float = 0.1, steps: int = 8, step_size: float | None = None,
                 random_start: bool = True, eps_ramp: float = 0.5, eps_start: float | None = None,
                 label_smoothing: float = 0.0, rs_weight: float = 12e-5, rs_mode: str = "improved",
                 rs_eps: float | None = None, l1: float = 2e-5) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, norm="linf", random_start=random_start,
                         eps_ramp=eps_ramp, label_smoothing=label_smoothing,
                         eps_start=min(0.01, eps) if eps_start is None and isinstance(eps, (int, float)) else eps_start,
                         l1=l1)
        if not isinstance(rs_weight, (int, float)) or rs_weight < 0:
            raise ValueError(f"rs_weight must be a number >= 0, got {rs_weight!r}")
        if rs_mode not in MODES:
            raise ValueError(f"rs_mode must be one of {list(MODES)}, got {rs_mode!r}")
        rs_eps = self.eps if rs_eps is None else rs_eps
        if not isinstance(rs_eps, (int, float)) or isinstance(rs_eps, bool) or not 0 <= rs_eps <= 1:
            raise ValueError(f"rs_eps must be a number in [0, 1] (pixel units), got {rs_eps!r}")
        self.rs_weight, self.rs_mode, self.rs_eps = float(rs_weight), rs_mode, float(rs_eps)
        self._sums = {"rs_loss": 0.0, "unstable": 0.0, "batches": 0}

    def rs_term(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The RS loss of ``images``' boxes (with gradient); also adds to the epoch's running means."""
        bounds = preactivation_bounds(model, images, self.rs_eps, self.rs_mode)   # type: ignore[arg-type]
        loss = rs_loss(bounds)
        with torch.no_grad():
            self._sums["rs_loss"] += float(loss)
            self._sums["unstable"] += unstable_counts([(lo.detach(), hi.detach()) for lo, hi in bounds])["total"]
            self._sums["batches"] += 1
        return loss

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(self.adversarial(model, images, labels))
        loss = self.task_loss(logits, labels) + self.penalty(model)
        if self.rs_weight > 0:
            loss = loss + self.rs_weight * self.rs_term(model, images)
        return loss, logits

    def epoch_summary(self) -> dict:
        """``{rs_loss, train_unstable}``: batch means since the last call (then reset); empty with
        ``rs_weight: 0`` (the bounds are not computed)."""
        sums, self._sums = self._sums, {"rs_loss": 0.0, "unstable": 0.0, "batches": 0}
        if not sums["batches"]:
            return {}
        return {"rs_loss": sums["rs_loss"] / sums["batches"], "train_unstable": sums["unstable"] / sums["batches"]}

    def describe(self) -> dict:
        return {**super().describe(), "l1": self.l1, "rs_weight": self.rs_weight, "rs_mode": self.rs_mode,
                "rs_eps": self.rs_eps}


class FBFTraining(PGDTraining):
    """"Fast is better than free" (Wong et al. 2020): ``delta ~ U(-eps, eps)``, one signed step of
    ``step_size`` (default ``1.25 eps``), clipped to the ball and the box; cross-entropy on ``x + delta``.

    Use it with a cyclic learning rate (``schedule: cyclic`` or ``onecycle``) and the loop's PGD check
    with early stopping (``training.robust_check``) against catastrophic overfitting.
    """

    name = "fbf"

    def __init__(self, *, eps: float = 8 / 255, step_size: float | None = None, norm: Norm = "linf",
                 eps_ramp: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(eps=eps, steps=1, step_size=1.25 * eps if step_size is None else step_size,
                         norm=norm, random_start=True, eps_ramp=eps_ramp, label_smoothing=label_smoothing)


class FGSMTraining(PGDTraining):
    """FGSM training (Goodfellow et al. 2015): one signed step of ``step_size`` (default ``eps``) from
    the clean image, no random start. It exists to reproduce catastrophic overfitting."""

    name = "fgsm"

    def __init__(self, *, eps: float = 8 / 255, step_size: float | None = None, norm: Norm = "linf",
                 eps_ramp: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(eps=eps, steps=1, step_size=eps if step_size is None else step_size,
                         norm=norm, random_start=False, eps_ramp=eps_ramp, label_smoothing=label_smoothing)


class TRADESTraining(AdversarialObjective):
    """TRADES (Zhang et al. 2019): ``CE(f(x), y) + beta * KL(f(x) || f(x''))`` with ``x''`` from
    :func:`trades_example` (L-inf; ``steps`` default 10, ``step_size`` default ``eps / 4``, about the
    paper's CIFAR-10 setting 0.007 for eps 0.031; seed 000 used ``eps / 10``). The gradient flows
    through both ``f(x)`` and ``f(x'')``, as in the paper. Returns the clean logits."""

    name = "trades"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 10, step_size: float | None = None,
                 beta: float = 6.0, eps_ramp: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(eps=eps, norm="linf", eps_ramp=eps_ramp, label_smoothing=label_smoothing)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.steps, self.beta = int(steps), float(beta)
        self.step_size = float(step_size) if step_size is not None else self.eps / 4

    def trades_term(self, model: nn.Module, x: torch.Tensor,
                    logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(KL(f(x) || f(x'')), x'')`` for inputs ``x`` whose logits (with gradient) are ``logits``."""
        x_adv = trades_example(model, x, logits, eps=self.current_eps, steps=self.steps,
                               step_size=self.step_size * self.scale, generator=self.generator(x.device))
        return kl_divergence(logits, model(x_adv)), x_adv

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        loss = self.task_loss(logits, labels)
        if self.beta > 0:
            loss = loss + self.beta * self.trades_term(model, images, logits)[0]
        return loss, logits

    def describe(self) -> dict:
        return {**super().describe(), "steps": self.steps, "step_size": self.step_size, "beta": self.beta}


class FBFTRADESTraining(TRADESTraining):
    """Seed 000's FBF + TRADES (Algorithms 3 and 4): ``x' = `` the FBF example of ``x`` (step
    ``fbf_step_size``, default ``1.25 eps``), then ``CE(f(x'), y) + beta * KL(f(x') || f(x''))`` with
    ``x''`` TRADES' maximiser started at ``x' + 0.001 N(0, I)`` and projected onto the ``eps``-ball
    around ``x'`` (Algorithm 4 receives ``x'`` as its input) and the box. Defaults as TRADES; the paper's
    segmentation settings were ``eps 8/255, steps 10, step_size eps/10`` with a pixel-summed KL."""

    name = "fbf_trades"

    def __init__(self, *, eps: float = 8 / 255, steps: int = 10, step_size: float | None = None,
                 beta: float = 6.0, fbf_step_size: float | None = None, eps_ramp: float = 0.0,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(eps=eps, steps=steps, step_size=step_size, beta=beta, eps_ramp=eps_ramp,
                         label_smoothing=label_smoothing)
        self.fbf_step_size = float(fbf_step_size) if fbf_step_size is not None else 1.25 * self.eps

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_fbf = pgd_example(model, images, labels, eps=self.current_eps, steps=1,
                            step_size=self.fbf_step_size * self.scale, norm="linf", random_start=True,
                            generator=self.generator(images.device))
        logits = model(x_fbf)
        loss = self.task_loss(logits, labels)
        if self.beta > 0:
            loss = loss + self.beta * self.trades_term(model, x_fbf, logits)[0]
        return loss, logits

    def describe(self) -> dict:
        return {**super().describe(), "fbf_step_size": self.fbf_step_size}


class GaussianNoiseTraining(SeededObjective):
    """Gaussian noise augmentation (Cohen, Rosenfeld & Kolter 2019, sec. 4): the cross-entropy on
    ``x + e``, ``e ~ N(0, sigma^2 I)`` in ``[0, 1]`` pixel space, drawn afresh for every batch from the
    objective's seeded generator on the images' device, **not** clamped to ``[0, 1]`` (the smoothed
    classifier of :mod:`threedb.robustness.smoothing` sees unclamped noise too). Train with the
    ``sigma`` you will certify with. Returns the logits of the noisy batch (the loop's training
    accuracy is then accuracy under noise). Works for classifiers and segmenters alike.

    Not adversarial: it has no ``eps``, so the card's PGD evaluation is off unless asked for.
    """

    name = "gaussian"

    def __init__(self, *, sigma: float = 0.25, label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(seed=seed)
        sigma = check_sigma(sigma)  # a SmoothingError (ValueError) naming sigma
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.sigma, self.label_smoothing = float(sigma), float(label_smoothing)

    def noisy(self, images: torch.Tensor) -> torch.Tensor:
        """``images + sigma * N(0, I)`` (a new tensor; no clamping)."""
        noise = torch.randn(images.shape, generator=self.generator(images.device), device=images.device,
                            dtype=images.dtype)
        return images + self.sigma * noise

    def __call__(self, model: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(self.noisy(images))
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing), logits

    def describe(self) -> dict:
        """Settings for logs and model cards."""
        return {"name": self.name, "sigma": self.sigma, "label_smoothing": self.label_smoothing}
