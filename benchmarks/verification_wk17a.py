"""Complete verification of the Wong & Kolter network (WK17a, "LP_d-CNN" of Tjeng et al. 2019) at L-inf eps 0.1
on MNIST test images: the paper's figures next to ours, on this machine.

The network is ``../shared/data/mipverify/WK17a_linf0.1.pth`` (a PyTorch state dict: Conv(1->16, k4, s2, p1),
ReLU, Conv(16->32, k4, s2, p1), ReLU, Flatten, FC(1568->100), ReLU, FC(100->10); inputs in [0, 1]),
converted once by :func:`~threedb.robustness.verification.from_torch`; the images are the official MNIST
test set (``../shared/data/mnist``, IDX), sample ids 1-indexed as in MIPVerify. Every verification runs in
a forked child killed a few seconds past its budget; its time is :func:`verify`'s (or
:func:`minimum_distortion`'s) own, the network's conversion excluded. Counterexamples are checked by the
original PyTorch module in float64 (``check``) and, reported separately, in float32.

(a) ``--n`` first images: per image misclassified / verified (unsat) / adversarial (sat) / timeout and the
    time; the adversarial error bracket ``[misclassified + sat, + timeouts] / n`` next to the error PGD alone
    finds (``threedb.robustness.attacks.PGD``, ``--pgd-steps`` x ``--pgd-restarts``): PGD's must be <= the
    bracket's lower end (an image PGD breaks but the verifier proves robust would be UNSOUND, printed so).
    The paper: 4.38% exact on the full test set, PGD 4.11%; mean 3.52 s per sample (its hardware).
(b) the ablation in the shape of the thesis' Table 5.1 on the first ``--ablation-n`` correctly classified
    images (or ``--ablation-samples``, e.g. ``1 2 3 4 9``: the first images are all proved by the bounds
    alone, so the MILP's settings -- asymmetric big-M -- only show on one that reaches the MILP, like 9):
    time per sample with everything on, without the restricted domain (bounds on all of [0, 1]), without
    asymmetric bounds (symmetric big-M), without progressive tightening (LP bound on every ReLU),
    without the symbolic bounds (intervals only), each capped by ``--ablation-timeout`` (``> T`` when
    capped); the paper's figures next to them (3.52 s; 57.96 s; 4598 s).
(c) the known results: samples 1 and 2 robust, 248 misclassified, 9 adversarial at 0.1 with minimum
    L-inf distortion 0.0940014207 (:func:`~threedb.robustness.verification.distortion.minimum_distortion`
    within ``||x' - x||_inf <= eps``, budget ``--distortion-timeout``; by bisection over complete
    verification by default, ``--distortion-method milp`` for one MILP): ours, its lower bound and gap, time.

Printed and written to ``--out`` (default ``benchmarks/results/``: ``verification_wk17a.json``, ``.md``).

    python benchmarks/verification_wk17a.py                      # full: --n 100 --ablation-n 5, 120 s caps
    python benchmarks/verification_wk17a.py --n 300 --timeout 120 --ablation-n 5 --ablation-timeout 600
    python benchmarks/verification_wk17a.py --n 10 --ablation-n 2 --timeout 60 --ablation-timeout 30  # quick
    python benchmarks/verification_wk17a.py [--eps 0.1] [--parts a b c] [--pgd-steps 100] [--pgd-restarts 10]
        [--ablation-samples 1 2 3 4 9] [--tighten lp|milp|none] [--distortion-timeout 300]
        [--distortion-method bisect|milp] [--out DIR]
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = DATA / "mipverify" / "WK17a_linf0.1.pth"
MNIST = DATA / "mnist"
GRACE = 10.0   #: seconds a child may run past its budget before it is killed
KNOWN_DISTORTION = 0.0940014207
#: the thesis' Table 5.1 (WK17a, eps 0.1): mean seconds per sample
PAPER = {"full": 3.52, "no restricted domain": 57.96, "no asymmetric bounds": 4598.0,
         "no progressive tightening": None, "no symbolic bounds": None}
ABLATIONS = {"full": {}, "no restricted domain": {"restricted_domain": False},
             "no asymmetric bounds": {"asymmetric": False}, "no progressive tightening": {"progressive": False},
             "no symbolic bounds": {"symbolic": False}}


def wk17a() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True, map_location="cpu"))
    return model.eval()


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzip): magic ``0 0 type ndim``, big-endian uint32 dimensions, then unsigned bytes."""
    raw = gzip.open(path).read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], dtype=">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255.0
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz").astype(int)
    return images.reshape(len(images), -1), labels


def torch_check(model: nn.Module, dtype: torch.dtype) -> Callable[[np.ndarray], np.ndarray]:
    copy = deepcopy(model).to(dtype).eval()

    def check(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = copy(torch.tensor(np.asarray(x).reshape(1, 1, 28, 28), dtype=dtype))
        return out.double().numpy().reshape(-1)

    return check


# --------------------------------------------------------------------------- one capped run

def _child(connection, job: Callable[[], dict]) -> None:
    try:
        connection.send(job())
    except Exception as exc:  # noqa: BLE001 - a failure is this run's 'error' result
        connection.send({"status": "error", "seconds": None, "message": f"{type(exc).__name__}: {exc}"[:400]})
    connection.close()


def capped(job: Callable[[], dict], budget: float) -> dict:
    """``job()`` in a forked child; ``timeout`` (killed) when it has not answered ``GRACE`` s past ``budget``."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, job), daemon=True)
    start = time.perf_counter()
    process.start()
    send.close()
    out: Optional[dict] = None
    if receive.poll(budget + GRACE):
        try:
            out = receive.recv()
        except EOFError:
            out = None
    if process.is_alive():
        process.kill()
    process.join()
    if out is None:
        out = {"status": "timeout", "seconds": None, "message": "killed past the budget"
               if time.perf_counter() - start >= budget + GRACE else f"child died ({process.exitcode})"}
    return out


def verify_job(network, x: np.ndarray, label: int, eps: float, options: dict, check64, check32) -> Callable[[], dict]:
    def job() -> dict:
        from threedb.robustness.verification import local_robustness
        from threedb.robustness.verification.verifier import VerifierOptions, verify

        torch.set_num_threads(1)
        spec = local_robustness(x, label, eps, 10)
        result = verify(network, spec, VerifierOptions(threads=1, **options), check=check64)
        out = {"status": result.status, "seconds": result.seconds, "method": result.method,
               "message": result.message, "unstable": result.stats.get("unstable")}
        if result.counterexample is not None:
            adv = result.counterexample
            out["linf"] = float(np.abs(adv - x).max())
            out["confirmed64"] = bool(spec.contains(adv) and spec.violated_by(check64(adv)))
            out["confirmed32"] = bool(spec.contains(adv) and spec.violated_by(check32(adv)))
        return out

    return job


def distortion_job(network, x: np.ndarray, label: int, max_eps: float, options: dict, check64,
                   method: str = "milp") -> Callable[[], dict]:
    def job() -> dict:
        from threedb.robustness.verification.distortion import bisect_distortion, minimum_distortion
        from threedb.robustness.verification.verifier import VerifierOptions

        torch.set_num_threads(1)
        if method == "bisect":   # complete verification (branch and bound) at shrinking radii
            result = bisect_distortion(network, x, label, max_eps=max_eps, tolerance=2e-5,
                                       options=VerifierOptions(threads=1, **options), check=check64)
        else:
            result = minimum_distortion(network, x, label, norm="linf", max_eps=max_eps,
                                        options=VerifierOptions(threads=1, **options), check=check64)
        out = result.summary()
        if result.adversarial is not None:
            out["linf_checked"] = float(np.abs(result.adversarial - x).max())
            y = check64(result.adversarial)
            out["adversarial_confirmed64"] = bool(int(np.argmax(y)) != label and
                                                  np.max(np.delete(y, label)) >= y[label])
        return out

    return job


def fmt_time(seconds: Optional[float], cap: float, capped_run: bool) -> str:
    return f"> {cap:g}" if capped_run or seconds is None else f"{seconds:.2f}"


# --------------------------------------------------------------------------- the three parts

def pgd_successes(model: nn.Module, x: np.ndarray, y: np.ndarray, eps: float, steps: int, restarts: int,
                  step_size: Optional[float]) -> np.ndarray:
    from threedb.robustness.attacks import PGD

    attack = PGD(eps=eps, steps=steps, restarts=restarts, step_size=step_size, seed=0)
    xt = torch.tensor(x.reshape(-1, 1, 28, 28), dtype=torch.float32)
    yt = torch.tensor(y)
    result = attack(model, xt, yt)
    with torch.no_grad():
        wrong = model(result.adv).argmax(1) != yt
    return (result.success & wrong).numpy()


def part_a(model, network, images, labels, args, check64, check32) -> dict:
    n = args.n
    x, y = images[:n], labels[:n]
    with torch.no_grad():
        predicted = model(torch.tensor(x.reshape(-1, 1, 28, 28), dtype=torch.float32)).argmax(1).numpy()
    start = time.perf_counter()
    pgd = pgd_successes(model, x, y, args.eps, args.pgd_steps, args.pgd_restarts, args.pgd_step_size)
    pgd_seconds = time.perf_counter() - start
    pgd_error = int(((predicted != y) | pgd).sum())
    options = {"timeout": args.timeout, "tighten": args.tighten}
    rows, unsound = [], []
    print(f"(a) first {n} MNIST test images, eps {args.eps}, {args.timeout:g} s each; PGD {args.pgd_steps} steps x "
          f"{args.pgd_restarts} restarts ({pgd_seconds:.1f} s for all): error {pgd_error}/{n}", flush=True)
    print(f"{'sample':>6} {'label':>5} {'pred':>4} {'result':<14} {'time s':>8} {'PGD':>4} {'method':<7}", flush=True)
    for i in range(n):
        row = {"sample": i + 1, "label": int(y[i]), "predicted": int(predicted[i]), "pgd_adversarial": bool(pgd[i]),
               "load_average": os.getloadavg()[0]}
        if predicted[i] != y[i]:
            row.update(result="misclassified", seconds=0.0)
        else:
            out = capped(verify_job(network, x[i], int(y[i]), args.eps, options, check64, check32), args.timeout)
            status = {"unsat": "verified", "sat": "adversarial"}.get(out["status"], out["status"])
            row.update(result=status, seconds=out.get("seconds"), detail=out)
            if status == "verified" and pgd[i]:
                unsound.append(i + 1)
                print(f"!!!!! UNSOUND: sample {i + 1} verified robust but PGD found an adversarial example !!!!!")
            if status == "adversarial" and not out.get("confirmed64"):
                print(f"!!!!! UNCONFIRMED sat on sample {i + 1} !!!!!")
        rows.append(row)
        print(f"{i + 1:>6} {row['label']:>5} {row['predicted']:>4} {row['result']:<14} "
              f"{(row['seconds'] if row['seconds'] is not None else float('nan')):>8.2f} {'yes' if pgd[i] else '':>4} "
              f"{row.get('detail', {}).get('method', ''):<7}", flush=True)
    counts = {k: sum(r["result"] == k for r in rows) for k in ("misclassified", "verified", "adversarial", "timeout")}
    counts["other"] = n - sum(counts.values())
    lower = counts["misclassified"] + counts["adversarial"]
    upper = lower + counts["timeout"] + counts["other"]
    # time per correctly classified sample; a run killed past its budget counts at the budget
    times = [r["seconds"] if r["seconds"] is not None else args.timeout for r in rows if r["result"] != "misclassified"]
    sats = [r for r in rows if r["result"] == "adversarial"]
    summary = {"n": n, "counts": counts, "adversarial_error_bracket": [lower / n, upper / n],
               "pgd_error": pgd_error / n,
               "pgd_within_bracket": pgd_error <= lower, "unsound_samples": unsound,
               "mean_seconds": statistics.mean(times) if times else None,
               "median_seconds": statistics.median(times) if times else None,
               "sat_confirmed64": sum(bool(r["detail"].get("confirmed64")) for r in sats),
               "sat_confirmed32": sum(bool(r["detail"].get("confirmed32")) for r in sats), "sats": len(sats),
               "pgd_seconds": pgd_seconds, "mean_load_average": statistics.mean(r["load_average"] for r in rows)}
    print(f"(a) misclassified {counts['misclassified']}, verified {counts['verified']}, adversarial "
          f"{counts['adversarial']}, timeout {counts['timeout']}, other {counts['other']}; adversarial error in "
          f"[{100 * lower / n:.2f}%, {100 * upper / n:.2f}%], PGD {100 * pgd_error / n:.2f}% (paper, full test set: "
          f"4.38% exact, PGD 4.11%); time per correctly classified sample: mean {summary['mean_seconds'] or 0:.2f} s, "
          f"median {summary['median_seconds'] or 0:.2f} s (paper: mean 3.52 s; mean 1-minute load average here "
          f"{summary['mean_load_average']:.2f} on {os.cpu_count()} cores); sat confirmed (float64 / float32 "
          f"module) {summary['sat_confirmed64']} / {summary['sat_confirmed32']} of {len(sats)}", flush=True)
    return {"summary": summary, "samples": rows}


def part_b(model, network, images, labels, args, check64, check32) -> dict:
    with torch.no_grad():
        predicted = model(torch.tensor(images[:1000].reshape(-1, 1, 28, 28), dtype=torch.float32)).argmax(1).numpy()
    if args.ablation_samples:   # 1-indexed, e.g. to include samples whose answer needs the MILP (9)
        samples = [s - 1 for s in args.ablation_samples if predicted[s - 1] == labels[s - 1]]
    else:
        samples = [i for i in range(1000) if predicted[i] == labels[i]][:args.ablation_n]
    cap = args.ablation_timeout
    print(f"\n(b) ablation on samples {[s + 1 for s in samples]}, eps {args.eps}, each capped at {cap:g} s", flush=True)
    table = {}
    for name, change in ABLATIONS.items():
        options = {"timeout": cap, "tighten": args.tighten, **change}
        runs = []
        for i in samples:
            out = capped(verify_job(network, images[i], int(labels[i]), args.eps, options, check64, check32), cap)
            was_capped = out["status"] == "timeout"
            runs.append({"sample": i + 1, "status": out["status"], "seconds": out.get("seconds"), "capped": was_capped})
            print(f"    {name:<26} sample {i + 1:>4}: {out['status']:<8} "
                  f"{fmt_time(out.get('seconds'), cap, was_capped)} s",
                  flush=True)
        values = [cap if r["capped"] or r["seconds"] is None else r["seconds"] for r in runs]
        table[name] = {"runs": runs, "mean_seconds": statistics.mean(values) if values else None,
                       "any_capped": any(r["capped"] for r in runs), "paper_seconds": PAPER[name]}
    print(f"\n{'setting':<28} {'ours s/sample':>14} {'paper s/sample':>15}")
    for name, row in table.items():
        ours = (f"> {row['mean_seconds']:.2f}" if row["any_capped"] else f"{row['mean_seconds']:.2f}") \
            if row["mean_seconds"] is not None else "-"
        paper = f"{row['paper_seconds']:g}" if row["paper_seconds"] is not None else "-"
        print(f"{name:<28} {ours:>14} {paper:>15}")
    return {"samples": [s + 1 for s in samples], "cap_seconds": cap, "settings": table}


def part_c(model, network, images, labels, args, check64, check32) -> dict:
    print(f"\n(c) known results at eps {args.eps}", flush=True)
    options = {"timeout": args.timeout, "tighten": args.tighten}
    expected = {1: "verified", 2: "verified", 248: "misclassified", 9: "adversarial"}
    out: dict = {}
    for sample, want in expected.items():
        i = sample - 1
        with torch.no_grad():
            pred = int(model(torch.tensor(images[i].reshape(1, 1, 28, 28), dtype=torch.float32)).argmax())
        if pred != labels[i]:
            got, detail = "misclassified", {"predicted": pred}
        else:
            detail = capped(verify_job(network, images[i], int(labels[i]), args.eps, options, check64, check32),
                            args.timeout)
            got = {"unsat": "verified", "sat": "adversarial"}.get(detail["status"], detail["status"])
        out[str(sample)] = {"expected": want, "result": got, "ok": got == want, "detail": detail}
        print(f"    sample {sample:>3}: {got:<14} expected {want:<14} {'ok' if got == want else 'MISMATCH'} "
              f"({detail.get('seconds') or 0:.2f} s)", flush=True)
    i = 8
    result = capped(distortion_job(network, images[i], int(labels[i]), args.eps,
                                   {"timeout": args.distortion_timeout, "tighten": args.tighten}, check64,
                                   args.distortion_method),
                    args.distortion_timeout)
    d = result.get("distortion")
    ok = d is not None and abs(d - KNOWN_DISTORTION) <= 1e-4 and result.get("status") == "optimal"
    out["9_min_distortion"] = {"known": KNOWN_DISTORTION, "ok": ok, **result}
    print(f"    sample   9 minimum L-inf distortion: {result.get('status')}, ours {d}, lower bound "
          f"{result.get('lower_bound')}, gap {result.get('gap')}, known {KNOWN_DISTORTION} "
          f"(|diff| {abs(d - KNOWN_DISTORTION) if d is not None else float('nan'):.2e}, "
          f"{'ok' if ok else 'MISMATCH'}), {result.get('seconds') or 0:.2f} s", flush=True)
    return out


def markdown(report: dict) -> str:
    lines = ["# WK17a (Wong & Kolter) at L-inf eps %g" % report["settings"]["eps"], "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in report["settings"].items()), ""]
    if "a" in report:
        s = report["a"]["summary"]
        c = s["counts"]
        lines += [f"## (a) first {s['n']} test images", "",
                  "| misclassified | verified | adversarial | timeout | other | adversarial error | PGD error | "
                  "mean s | median s |", "|---|---|---|---|---|---|---|---|---|",
                  f"| {c['misclassified']} | {c['verified']} | {c['adversarial']} | {c['timeout']} | {c['other']} | "
                  f"[{100 * s['adversarial_error_bracket'][0]:.2f}%, {100 * s['adversarial_error_bracket'][1]:.2f}%] | "
                  f"{100 * s['pgd_error']:.2f}% | {s['mean_seconds'] or 0:.2f} | {s['median_seconds'] or 0:.2f} |", "",
                  "Paper (full test set): 4.38% exact, PGD 4.11%, mean 3.52 s per sample. Mean 1-minute load "
                  f"average during (a): {s.get('mean_load_average', 0):.2f} on {os.cpu_count()} cores.", "",
                  "| sample | label | predicted | result | seconds | PGD adversarial |", "|---|---|---|---|---|---|"]
        for r in report["a"]["samples"]:
            sec = f"{r['seconds']:.2f}" if r["seconds"] is not None else "-"
            lines.append(f"| {r['sample']} | {r['label']} | {r['predicted']} | {r['result']} | {sec} | "
                         f"{'yes' if r['pgd_adversarial'] else ''} |")
        lines.append("")
    if "b" in report:
        b = report["b"]
        lines += [f"## (b) ablation (samples {b['samples']}, capped at {b['cap_seconds']:g} s)", "",
                  "| setting | ours s/sample | paper s/sample |", "|---|---|---|"]
        for name, row in b["settings"].items():
            ours = (f"> {row['mean_seconds']:.2f}" if row["any_capped"] else f"{row['mean_seconds']:.2f}")
            lines.append(f"| {name} | {ours} | {row['paper_seconds'] if row['paper_seconds'] is not None else '-'} |")
        lines.append("")
    if "c" in report:
        lines += ["## (c) known results", "", "| sample | expected | ours | ok |", "|---|---|---|---|"]
        for key, row in report["c"].items():
            if key == "9_min_distortion":
                lines.append(f"| 9 min L-inf distortion | {row['known']} | {row.get('distortion')} (lower bound "
                             f"{row.get('lower_bound')}, gap {row.get('gap')}, {row.get('seconds')} s) | "
                             f"{'yes' if row['ok'] else 'NO'} |")
            else:
                lines.append(f"| {key} | {row['expected']} | {row['result']} | {'yes' if row['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=120.0, help="budget per sample in (a) and (c)")
    parser.add_argument("--ablation-n", type=int, default=5)
    parser.add_argument("--ablation-samples", type=int, nargs="+", default=None,
                        help="1-indexed samples for (b) instead of the first --ablation-n (among the first 1000)")
    parser.add_argument("--ablation-timeout", type=float, default=None, help="cap per run in (b) (default --timeout)")
    parser.add_argument("--distortion-timeout", type=float, default=300.0)
    parser.add_argument("--distortion-method", choices=("milp", "bisect"), default="bisect",
                        help="(c): bisection over complete verification (default) or one MILP over the ball")
    parser.add_argument("--pgd-steps", type=int, default=100)
    parser.add_argument("--pgd-restarts", type=int, default=10)
    parser.add_argument("--pgd-step-size", type=float, default=None, help="default 2.5 eps / steps")
    parser.add_argument("--tighten", choices=("none", "lp", "milp"), default="lp")
    parser.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.ablation_timeout = args.ablation_timeout or args.timeout
    torch.set_num_threads(1)
    if not WEIGHTS.is_file() or not MNIST.is_dir():
        print(f"skipped: {WEIGHTS} or {MNIST} not found (public data)")
        return 0
    from threedb.robustness.verification import from_torch

    model = wk17a()
    images, labels = mnist_test()
    start = time.perf_counter()
    network = from_torch(model, (1, 28, 28), source="WK17a_linf0.1")
    convert = time.perf_counter() - start
    check64, check32 = torch_check(model, torch.float64), torch_check(model, torch.float32)
    gap = float(np.abs(network(images[:20]) - np.stack([check64(v) for v in images[:20]])).max())
    print(f"WK17a: {network.describe()['layers']} ({network.describe()['relus']} ReLUs), converted in {convert:.2f} s; "
          f"max |converted - torch float64| on 20 images {gap:.1e}", flush=True)
    settings = {"eps": args.eps, "n": args.n, "timeout": args.timeout, "ablation_n": args.ablation_n,
                "ablation_timeout": args.ablation_timeout, "distortion_timeout": args.distortion_timeout,
                "pgd": f"{args.pgd_steps} steps x {args.pgd_restarts} restarts", "tighten": args.tighten,
                "distortion_method": args.distortion_method, "complete": "bab (the verifier's default)",
                "threads": 1}
    report: dict = {"settings": settings, "conversion_seconds": convert}
    args.out.mkdir(parents=True, exist_ok=True)
    for part, run in (("a", part_a), ("b", part_b), ("c", part_c)):
        if part in args.parts:
            report[part] = run(model, network, images, labels, args, check64, check32)
            (args.out / "verification_wk17a.json").write_text(json.dumps(report, indent=1, default=str))
            (args.out / "verification_wk17a.md").write_text(markdown(report))
    print(f"\nwritten: {args.out / 'verification_wk17a.json'}, {args.out / 'verification_wk17a.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
