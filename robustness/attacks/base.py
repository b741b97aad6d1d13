"""What every attack shares: the threat model, the task (loss and success), budgets and results.

Conventions (every robustness module follows them):

* inputs are images in ``[0, 1]``, ``NxCxHxW`` float tensors; normalisation lives inside the model
  (:class:`threedb.robustness.models.Normalized`), so ``eps`` is in pixel units as in the papers;
* a model is called in ``eval()`` mode while it is attacked (its mode is restored afterwards);
* every adversarial output lies in the ``eps``-ball around ``x`` (L-inf or L2) **and** in the
  ``[0, 1]`` box;
* randomness comes from a CPU ``torch.Generator`` seeded by the attack's ``seed`` (draws are moved
  to the input's device): same seed, same result, and CPU and CUDA runs draw the same numbers, so
  they agree up to floating-point differences in the model;
* a *task* says what the model outputs and what the attacker maximises: :class:`Classification`
  (logits ``NxK``, labels ``N``) or :class:`Segmentation` (logits ``NxKxHxW``, masks ``NxHxW``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Optional

import torch
from torch import nn
from torch.nn import functional as F

Norm = Literal["linf", "l2"]
Model = Callable[[torch.Tensor], torch.Tensor]


class AttackError(ValueError):
    """An attack cannot run as asked (bad budget, bad input, unusable gradients); says why and what to do."""


# --------------------------------------------------------------------------- tasks

class Task:
    """How outputs, labels, losses and success relate for one kind of model."""

    name = "task"

    def loss(self, output: torch.Tensor, y: torch.Tensor, kind: str = "ce",
             target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-example loss the attacker **maximises** (``N``)."""
        raise NotImplementedError

    def success(self, output: torch.Tensor, y: torch.Tensor,
                target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-example bool: the attack reached its goal on this output."""
        raise NotImplementedError

    def score(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example quality of the model's output, higher is better (worst case = minimum)."""
        raise NotImplementedError


class Classification(Task):
    """Logits ``NxK``, integer labels ``N``. Success: misclassified (untargeted) or predicted ``target``."""

    name = "classification"

    def loss(self, output: torch.Tensor, y: torch.Tensor, kind: str = "ce",
             target: Optional[torch.Tensor] = None) -> torch.Tensor:
        if kind == "ce":
            if target is not None:
                return -F.cross_entropy(output, target, reduction="none")
            return F.cross_entropy(output, y, reduction="none")
        if kind == "dlr":
            return dlr_loss(output, y, target)
        raise AttackError(f"unknown loss {kind!r} for classification (use ce or dlr)")

    def success(self, output: torch.Tensor, y: torch.Tensor,
                target: Optional[torch.Tensor] = None) -> torch.Tensor:
        pred = output.argmax(1)
        return pred == target if target is not None else pred != y

    def score(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (output.argmax(1) == y).float()


class Segmentation(Task):
    """Logits ``NxKxHxW``, integer masks ``NxHxW`` (``ignore_index`` pixels are skipped).

    The loss is the per-image mean pixel-wise cross-entropy; success means the image's pixel
    accuracy fell below ``success_below`` (default 0.5); the score is the pixel accuracy.
    """

    name = "segmentation"

    def __init__(self, ignore_index: int = -100, success_below: float = 0.5) -> None:
        self.ignore_index, self.success_below = ignore_index, success_below

    def loss(self, output: torch.Tensor, y: torch.Tensor, kind: str = "ce",
             target: Optional[torch.Tensor] = None) -> torch.Tensor:
        if kind != "ce":
            raise AttackError(f"unknown loss {kind!r} for segmentation (use ce)")
        goal = target if target is not None else y
        pixel = F.cross_entropy(output, goal, reduction="none", ignore_index=self.ignore_index)
        valid = (goal != self.ignore_index).flatten(1).sum(1).clamp_min(1)
        per_image = pixel.flatten(1).sum(1) / valid
        return -per_image if target is not None else per_image

    def pixel_accuracy(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        valid = y != self.ignore_index
        right = (output.argmax(1) == y) & valid
        return right.flatten(1).sum(1).float() / valid.flatten(1).sum(1).clamp_min(1).float()

    def success(self, output: torch.Tensor, y: torch.Tensor,
                target: Optional[torch.Tensor] = None) -> torch.Tensor:
        if target is not None:
            return self.pixel_accuracy(output, target) >= 1 - self.success_below
        return self.pixel_accuracy(output, y) < self.success_below

    def score(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.pixel_accuracy(output, y)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), per example, to maximise.

    Untargeted: ``-(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3)``; targeted:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (needs at least 4 classes; 3 for untargeted).
    """
    k = logits.shape[1]
    if k < (4 if target is not None else 3):
        raise AttackError(f"the DLR loss needs at least {4 if target is not None else 3} classes, "
                          f"the model has {k}: use loss ce")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    if target is not None:
        z_t = logits.gather(1, target[:, None])[:, 0]
        return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
    other = logits.clone()
    other.scatter_(1, y[:, None], -math.inf)
    return -(z_y - other.max(1).values) / (top[:, 0] - top[:, 2] + 1e-12)


# --------------------------------------------------------------------------- geometry

def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """``delta`` projected onto the ``eps``-ball of ``norm`` (per example)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    factor = (eps / flat).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.ndim - 1)))


def clip_to_threat(x_adv: torch.Tensor, x: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """``x_adv`` moved into the ball around ``x`` and then into the ``[0, 1]`` box.

    For L-inf the box clip keeps the point in the ball; for L2 clipping to the box only shortens the
    perturbation coordinate-wise, so the result stays in both sets.
    """
    return (x + project(x_adv - x, norm, eps)).clamp(0.0, 1.0)


def perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of ``delta``."""
    flat = delta.flatten(1)
    return flat.abs().max(1).values if norm == "linf" else flat.norm(p=2, dim=1)


def normalized_gradient(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: ``sign(g)`` (L-inf) or ``g / ||g||_2`` (L2)."""
    if norm == "linf":
        return grad.sign()
    n = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / n.view(-1, *([1] * (grad.ndim - 1)))


def draw(sample: Callable[..., torch.Tensor], *args: object, generator: torch.Generator,
         like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``sample(*args)`` (``torch.rand``, ``randn``, ``randint``) drawn on the generator's device and moved
    to ``like``'s: attacks draw from a CPU generator, so CPU and CUDA runs see the same random numbers."""
    out = sample(*args, generator=generator, device=generator.device,
                 **({"dtype": dtype} if dtype is not None else {}))
    return out.to(like.device)


def random_in_ball(x: torch.Tensor, norm: Norm, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A uniform random perturbation of ``x`` inside the ball (L2: uniform in the ball's volume), then the box."""
    if norm == "linf":
        delta = (draw(torch.rand, x.shape, generator=generator, like=x, dtype=x.dtype) * 2 - 1) * eps
    else:
        d = x[0].numel()
        direction = draw(torch.randn, x.shape, generator=generator, like=x, dtype=x.dtype)
        direction = normalized_gradient(direction, "l2")
        radius = draw(torch.rand, x.shape[0], generator=generator, like=x, dtype=x.dtype) ** (1.0 / d) * eps
        delta = direction * radius.view(-1, *([1] * (x.ndim - 1)))
    return (x + delta).clamp(0.0, 1.0)


def check_in_threat(x_adv: torch.Tensor, x: torch.Tensor, norm: Norm, eps: float, tol: float = 1e-5) -> None:
    """The contract every attack keeps, checked on every output: inside the ball and the box."""
    if x_adv.numel() == 0:
        return
    outside_box = float(x_adv.min()) < 0.0 or float(x_adv.max()) > 1.0
    too_far = float(perturbation_norm(x_adv - x, norm).max()) > eps * (1 + tol) + tol
    if outside_box or too_far:
        raise AssertionError(f"internal error: an attack left the {norm} ball of radius {eps} or the [0, 1] box")


# --------------------------------------------------------------------------- model handling

@contextlib.contextmanager
def eval_mode(model: Model) -> Iterator[None]:
    """``model.eval()`` for the duration (BN statistics and dropout frozen), mode restored after."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def check_budget(norm: str, eps: float) -> None:
    """Refuse an unknown norm or an eps outside the ``[0, 1]`` pixel range (L-inf) / ``> 0``."""
    if norm not in ("linf", "l2"):
        raise AttackError(f"unknown norm {norm!r}: use linf or l2")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps):
        raise AttackError(f"eps must be a number, got {eps!r}")
    if norm == "linf" and not 0 <= eps <= 1:
        raise AttackError(f"eps {eps} is outside [0, 1]: images are in [0, 1], so an L-inf budget is a "
                          f"fraction of the pixel range (8/255 = {8 / 255:.4f}), not in 0..255 units")
    if norm == "l2" and eps < 0:
        raise AttackError(f"eps {eps} is negative")


def check_images(x: torch.Tensor) -> None:
    """Inputs must be floating ``NxCxHxW`` images in ``[0, 1]``."""
    if not torch.is_tensor(x) or not x.is_floating_point() or x.ndim != 4:
        raise AttackError(f"expected a float NxCxHxW image batch, got "
                          f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise AttackError(f"images must be in [0, 1] (found [{float(x.min()):.3g}, {float(x.max()):.3g}]); "
                          "normalisation belongs inside the model (threedb.robustness.models.Normalized)")


def input_gradient(model: Model, task: Task, x_adv: torch.Tensor, y: torch.Tensor, loss: str,
                   target: Optional[torch.Tensor] = None, *, check_zero: bool = False,
                   missing_as_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(gradient of the summed per-example loss w.r.t. x_adv, per-example loss, output)``.

    A gradient that is missing, NaN, or (with ``check_zero``, used on an attack's first step) exactly
    zero on every example means the model is not differentiable as the attack needs (a
    non-differentiable defence): that is an error telling the user to wrap the model in BPDA, never a
    silent "robust". ``missing_as_zero`` (the naive evaluation of ``Attack(gradient_check=False)``)
    turns a missing gradient into zeros instead of an error; NaN gradients always raise.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        output = model(x_adv)
        per_example = task.loss(output, y, loss, target)
        if missing_as_zero and not per_example.requires_grad:
            return torch.zeros_like(x_adv), per_example.detach(), output.detach()
        try:
            (grad,) = torch.autograd.grad(per_example.sum(), x_adv, allow_unused=True)
        except RuntimeError as exc:
            raise GradientError(f"the model's output has no gradient with respect to its input ({exc}); "
                                "wrap it with threedb.robustness.attacks.BPDA") from None
    if grad is None and missing_as_zero:
        grad = torch.zeros_like(x_adv)
    if grad is None:
        raise GradientError("the model's output does not depend differentiably on its input; "
                            "wrap it with threedb.robustness.attacks.BPDA")
    if not bool(torch.isfinite(grad.sum())):   # one reduction: a NaN or inf anywhere makes the sum non-finite
        raise GradientError("the model's input gradient has NaN or infinite entries (a gradient-masking "
                            "or numerically broken defence); wrap it with threedb.robustness.attacks.BPDA")
    if check_zero:
        # Exactly zero everywhere while the loss is not saturated: the gradient is blocked (rounding,
        # quantisation, argmax, a detach) rather than small. A saturated model (loss ~0) is exempt.
        zero = grad.flatten(1).abs().amax(1) == 0
        if bool(zero.all()) and bool((per_example.detach().abs() > 1e-6).any()):
            raise GradientError("the model's input gradient is exactly zero on every example although the "
                                "loss is not saturated: the model is not differentiable (e.g. quantising or "
                                "thermometer-encoding its input), so a gradient attack would report false "
                                "robustness; wrap it with threedb.robustness.attacks.BPDA")
    return grad.detach(), per_example.detach(), output.detach()


class GradientError(AttackError):
    """Input gradients are unusable (missing, NaN, or zero everywhere): use BPDA."""


def keep_stronger(best: "Best", x_adv: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
    """Update ``best`` in place where ``x_adv`` is stronger: successful beats unsuccessful, then higher loss.

    Used across steps and restarts, so more steps or restarts never weaken an attack.
    """
    better = (success & ~best.success) | ((success == best.success) & (loss > best.loss))
    best.adv[better] = x_adv[better].detach()
    best.loss[better] = loss[better]
    best.success |= success


@dataclass
class Best:
    """Per-example strongest point found so far (see :func:`keep_stronger`)."""

    adv: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor) -> "Best":
        n = x.shape[0]
        return cls(x.detach().clone(), torch.full((n,), -math.inf, device=x.device),
                   torch.zeros(n, dtype=torch.bool, device=x.device))


# --------------------------------------------------------------------------- results

@dataclass
class AttackResult:
    """What an attack returns for a batch.

    ``adv``: the adversarial inputs (in the ball and the box; the clean input where nothing better
    was found); ``success``: per example, the attack's goal met on ``adv``; ``queries``/``gradients``:
    per example, forward passes and input-gradient computations spent; ``extra``: attack-specific
    per-example figures (``"loss"``: the loss the attack maximised, at ``adv``).
    """

    adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor
    gradients: torch.Tensor
    extra: dict = field(default_factory=dict)


class Attack:
    """Base class: validates the budget and the inputs, runs :meth:`run` in eval mode.

    Subclasses implement :meth:`run` ``(model, x, y, target, generator) -> AttackResult`` and take
    gradients through :meth:`gradient`. ``targeted`` attacks need ``target=`` labels in
    :meth:`__call__`; untargeted ones refuse them. ``gradient_check`` (default ``True``): refuse a
    model whose input gradient is exactly zero everywhere on the first step (see :meth:`gradient`).
    """

    name = "attack"
    uses_gradients = True

    def __init__(self, *, norm: Norm = "linf", eps: float = 8 / 255, task: Task | None = None,
                 loss: str = "ce", targeted: bool = False, seed: int = 0, gradient_check: bool = True) -> None:
        check_budget(norm, eps)
        self.norm, self.eps, self.loss, self.targeted, self.seed = norm, float(eps), loss, targeted, seed
        self.task = task or Classification()
        self.gradient_check = bool(gradient_check)

    def gradient(self, model: Model, x_adv: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
                 *, first: bool, loss: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`input_gradient` under this attack's ``gradient_check`` (``first``: the attack's first step).

        ``gradient_check=False`` is the *naive evaluation*: a zero or missing gradient is used as it is
        (zero), so a non-differentiable defence looks robust; with the default ``True`` it raises
        :class:`GradientError` suggesting BPDA.
        """
        return input_gradient(model, self.task, x_adv, y, loss or self.loss, target,
                              check_zero=first and self.gradient_check, missing_as_zero=not self.gradient_check)

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor,
                 target: Optional[torch.Tensor] = None) -> AttackResult:
        check_images(x)
        if self.targeted and target is None:
            raise AttackError(f"{self.name} is targeted: pass target= labels")
        if not self.targeted and target is not None:
            raise AttackError(f"{self.name} is untargeted: do not pass target= (or set targeted=True)")
        generator = torch.Generator().manual_seed(self.seed)   # CPU: the same draws on every device
        with eval_mode(model):
            result = self.run(model, x.detach(), y, target, generator)
        check_in_threat(result.adv, x, self.norm, self.eps)
        return result

    def run(self, model: Model, x: torch.Tensor, y: torch.Tensor, target: Optional[torch.Tensor],
            generator: torch.Generator) -> AttackResult:
        raise NotImplementedError

    def describe(self) -> dict:
        """The attack's settings, for reports."""
        return {"name": self.name, "norm": self.norm, "eps": self.eps, "loss": self.loss,
                "targeted": self.targeted, "seed": self.seed, "gradient_check": self.gradient_check}
