"""How dataset projection (:func:`threedb.robustness.projection.project_dataset`) scales, and what the block
precomputation buys.

Synthetic features (``--dim`` dimensions): ``k`` source groups, each Gaussian around its own random mean,
``N`` source samples split evenly; a target of ``--target`` samples drawn as a known mixture of the first
groups. Bandwidth fixed to the median heuristic of the first configuration (so every row solves the same kind
of problem). Printed:

1. **against N** (``--samples``, at ``--groups-at`` groups) and 2. **against k** (``--groups``, at
   ``--samples-at`` samples): seconds (median of ``--row-repeats`` interleaved rounds) for the blocks
   (``A``, ``b``, ``c``: ``O((N + m)^2 D)``), for each solver on them (``O(k^2)`` per iteration), the total
   of one ``project_dataset`` call, and each total's growth over the row before next to the growth of
   ``N^2`` (or ``k^2``);
3. **one gradient evaluation** at the ``--samples-at`` / largest ``--groups`` configuration, median of
   ``--repeats`` interleaved rounds: ``2Aw - 2b`` on the precomputed blocks, the thesis' central differences
   on the blocks (``2k`` evaluations), the same gradient from a precomputed full kernel matrix (its block sums
   redone each time, ``O(N^2)``), and the kernel matrix computed once (the limit: no exact method evaluates
   the objective without it). Ratios are to the block gradient, measured side by side in one run.

    python benchmarks/projection_scaling.py [--samples 500,1000,2000,4000] [--groups-at 32]
                                            [--groups 4,16,64,256] [--samples-at 2000] [--dim 64]
                                            [--target 200] [--repeats 5] [--row-repeats 3]
                                            [--device auto|cpu|cuda]
                                            [--threads 1] [--seed 0]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def problem(n: int, k: int, dim: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(target, source, group ids)``: ``k`` Gaussian groups of ``~n/k`` samples; the target mixes the first
    (up to) 4 groups with weights 0.4, 0.3, 0.2, 0.1."""
    g = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(k, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    ids = torch.arange(n) % k
    source = means[ids] + torch.randn(n, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    mix = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)[:k]
    pick = torch.multinomial(mix / mix.sum(), m, replacement=True, generator=g)
    target = means[pick] + torch.randn(m, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    return target, source, ids


def scaling_rows(configs: list[tuple[int, int]], args: argparse.Namespace, sigma: float,
                 device: torch.device) -> list[dict[str, float]]:
    from threedb.robustness.projection import project_dataset
    from threedb.robustness.projection.mmd import MixtureMMD, source_blocks, target_terms
    from threedb.robustness.projection.solvers import SOLVERS

    rows = []
    for n, k in configs:
        target, source, ids = problem(n, k, args.dim, args.target, args.seed)
        t_d, s_d, i_d = target.to(device), source.to(device), ids.to(device)

        def blocks() -> MixtureMMD:
            A, sizes = source_blocks(s_d, i_d, k, sigma)
            b, c = target_terms(t_d, s_d, i_d, sizes, sigma)
            return MixtureMMD(A, b, c, sizes, len(target))

        objective = blocks()
        step = 1.0 / max(objective.lipschitz(), 1e-12)
        runs: dict[str, Callable[[], object]] = {"blocks": blocks}
        for name, solver in SOLVERS.items():
            runs[name] = lambda solver=solver: solver(objective.value, objective.gradient, k, step_size=step)
        runs["total"] = lambda: project_dataset(target, None, source, ids, per_class=False, bandwidth=sigma,
                                                device=device)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        row: dict[str, float] = {"N": n, "k": k}
        for _ in range(args.row_repeats):            # interleaved rounds, median per quantity
            for name, fn in runs.items():
                t, out = timed(fn, device)
                seconds[name].append(t)
                if name in SOLVERS:
                    row[name + "_iters"] = out.iterations
        row.update({name: statistics.median(ts) for name, ts in seconds.items()})
        rows.append(row)
    return rows


def print_scaling(title: str, rows: list[dict[str, float]], key: str, power: int) -> None:
    print(title)
    print(f"  {'N':>6} {'k':>5} {'blocks s':>9} {'active_set s':>13} {'(iters)':>7} {'pgd s':>8} {'(iters)':>7} "
          f"{'total s':>8} {'growth':>7} {key + '^' + str(power) + ' growth':>12}")
    for i, row in enumerate(rows):
        growth = row["total"] / rows[i - 1]["total"] if i else float("nan")
        ideal = (row[key] / rows[i - 1][key]) ** power if i else float("nan")
        print(f"  {row['N']:>6} {row['k']:>5} {row['blocks']:>9.4f} {row['active_set']:>13.4f} "
              f"{row['active_set_iters']:>7} {row['pgd']:>8.4f} {row['pgd_iters']:>7} {row['total']:>8.4f} "
              f"{growth:>7.2f} {ideal:>12.2f}")


def gradient_costs(n: int, k: int, args: argparse.Namespace, sigma: float, device: torch.device) -> None:
    from threedb.robustness.projection import rbf_kernel
    from threedb.robustness.projection.mmd import MixtureMMD, source_blocks, target_terms

    target, source, ids = problem(n, k, args.dim, args.target, args.seed)
    t_d, s_d, i_d = target.to(device), source.to(device), ids.to(device)
    A, sizes = source_blocks(s_d, i_d, k, sigma)
    b, c = target_terms(t_d, s_d, i_d, sizes, sigma)
    objective = MixtureMMD(A, b, c, sizes, len(target))
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    pooled = torch.cat([t_d, s_d])
    full = rbf_kernel(s_d, s_d, sigma)
    full.fill_diagonal_(0.0)
    n_d = sizes.to(device=device, dtype=torch.float64)
    denom = torch.outer(n_d, n_d) - torch.diag(n_d)
    b_d, w_d = b.to(device), w.to(device)

    def from_full_matrix() -> torch.Tensor:
        by_group = torch.zeros(n, k, dtype=torch.float64, device=device).index_add_(1, i_d, full)
        sums = torch.zeros(k, k, dtype=torch.float64, device=device).index_add_(0, i_d, by_group)
        return 2.0 * ((sums / denom) @ w_d - b_d)

    methods: dict[str, Callable[[], object]] = {
        "gradient, blocks": lambda: objective.gradient(w),
        "value, blocks": lambda: objective.value(w),
        "central differences, blocks": lambda: objective.central_gradient(w),
        "gradient, full kernel matrix": from_full_matrix,
        "kernel matrix once": lambda: rbf_kernel(pooled, pooled, sigma),
    }
    assert torch.allclose(from_full_matrix().cpu(), objective.gradient(w), atol=1e-9)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():                     # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in methods.items():
            seconds[name].append(timed(fn, device)[0])
    base = statistics.median(seconds["gradient, blocks"])
    print(f"3. one evaluation at N {n}, k {k}, m {len(target)}, D {args.dim} "
          f"(median of {args.repeats} interleaved rounds)")
    for name in methods:
        t = statistics.median(seconds[name])
        print(f"  {name:<30} {t * 1e3:>11.4f} ms  {t / base:>11.1f}x the block gradient")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="500,1000,2000,4000")
    parser.add_argument("--groups-at", type=int, default=32)
    parser.add_argument("--groups", default="4,16,64,256")
    parser.add_argument("--samples-at", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--target", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the one-evaluation comparison")
    parser.add_argument("--row-repeats", type=int, default=3, help="rounds per row of the scaling tables")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the machine is shared)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    from threedb.robustness.projection import median_bandwidth

    samples = [int(s) for s in args.samples.split(",")]
    groups = [int(s) for s in args.groups.split(",")]
    target, source, _ = problem(samples[0], args.groups_at, args.dim, args.target, args.seed)
    sigma = median_bandwidth(target, source, seed=args.seed)
    print(f"dataset projection on {device}, {args.threads} CPU threads; D {args.dim}, target m {args.target}, "
          f"bandwidth {sigma:.4f} (median heuristic), float64 kernels; solvers at step 1/L, tol 1e-6, "
          "at most 1000 iterations")
    print_scaling(f"1. against the number of source samples N (k {args.groups_at})",
                  scaling_rows([(n, args.groups_at) for n in samples], args, sigma, device), "N", 2)
    print_scaling(f"2. against the number of groups k (N {args.samples_at})",
                  scaling_rows([(args.samples_at, k) for k in groups], args, sigma, device), "k", 2)
    gradient_costs(args.samples_at, groups[-1], args, sigma, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
