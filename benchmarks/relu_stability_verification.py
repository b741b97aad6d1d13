"""Does training for ReLU stability make verification faster (thesis ch. 6, Table E.4)? Side by side in one run.

Verifies the control (PGD + L1 + pruning) and the RS-trained MNIST networks on the same held-out images with
``threedb verify`` (one job each, the same eps, timeout and verifier settings) and prints provable accuracy,
unstable ReLUs (interval, symbolic and LP-tightened bounds, mean per image) and time per image, with the
ratio control / RS. The thesis: control 91.58% provable, 278 unstable, 6.43 s; + RS 94.33%, 101, 0.49 s
(MNIST eps 0.1, 70 epochs on 60,000 images, Gurobi); RS speeds verification up 4-13x on MNIST.

The two models come from ``threedb train configs/mnist_train_control.yaml`` and
``configs/mnist_train_rs.yaml`` (training set: MNIST test images 0..7999; the images verified here are from
8000..9999, ``threedb dataset from-idx ... --range 8000:10000 --out runs/mnist-test``):

    python benchmarks/relu_stability_verification.py --control runs/mnist-control/card.json \\
        --rs runs/mnist-rs/card.json --data runs/mnist-test --n 40 --eps 0.05 --timeout 60
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "verify_quickstart.yaml"


def run_job(card: str, data: str, out: Path, n: int, eps: float, timeout: float) -> dict:
    """One ``threedb verify`` job; its report's headline."""
    cmd = [sys.executable, "-m", "threedb.sim.cli", "verify", str(CONFIG), "--out", str(out), "--resume",
           "--set", f"model.card={Path(card).resolve()}", "--set", f"data.root={Path(data).resolve()}",
           "--set", f"data.max_examples={n}", "--set", f"verification.eps={eps}",
           "--set", f"verification.timeout={timeout}"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads((out / "report.json").read_text())["headline"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="card.json of the control model")
    parser.add_argument("--rs", required=True, help="card.json of the RS-trained model")
    parser.add_argument("--data", required=True, help="held-out image folder (threedb dataset)")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "relu_stability"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    rows = {name: run_job(card, args.data, out / name, args.n, args.eps, args.timeout)
            for name, card in (("control", args.control), ("rs", args.rs))}
    keys = ["clean_accuracy", "verified_accuracy", "adversarial_error_lower", "adversarial_error_upper",
            "pgd_error", "unstable_relus.interval", "unstable_relus.symbolic", "unstable_relus.final",
            "mean_seconds", "median_seconds"]
    lines = [f"# ReLU stability and verification time (eps {args.eps}, {args.n} images, timeout {args.timeout} s)",
             "", "| | control | + RS | control / RS |", "|---|---|---|---|"]
    for key in keys:
        a, b = rows["control"].get(key), rows["rs"].get(key)
        ratio = f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else ""
        fmt = (lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else str(v))  # noqa: E731
        lines.append(f"| {key} | {fmt(a)} | {fmt(b)} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"settings": vars(args), "headline": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
