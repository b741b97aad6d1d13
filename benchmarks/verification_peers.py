"""Complete verification on VNN-COMP 2021 ``mnistfc``: threedb's verifier against Marabou 2.0.0, side by side,
with the competition's consensus and alpha-beta-CROWN's VNN-COMP 2021 row as references.

Every instance (``mnistfc_instances.csv``: 3 networks x 30 properties, 120 s each; by default the 89 that
VNN-COMP 2021 ran and the consensus covers, ``--all-instances`` adds 256x6 prop_14_0.05) is run by each
tool in its own subprocess with the same budget (``min(csv timeout, --timeout)``), killed a few seconds
after it (the interpreter's start is not budget). A tool's time is measured inside its subprocess from
the start of its work (importing the tool, reading the two files) to the answer (VNN-COMP counts
preparation too); an answer after the budget counts as ``timeout``. ``--jobs 2`` runs the two tools at the
same time, one per core; ``--jobs 1`` one after the other (quieter timings, twice the wall time).

* **threedb**: :func:`~threedb.robustness.verification.from_onnx`, :func:`~threedb.robustness.verification.
  parse_vnnlib`, :func:`~threedb.robustness.verification.verifier.verify` with ``VerifierOptions(timeout,
  threads=1)`` and onnxruntime on the original file as the counterexample check.
* **Marabou** (``maraboupy==2.0.0``, the ``peers`` extra): ``Marabou.read_onnx`` and Marabou's own VNN-LIB
  parser (``MarabouCore.loadProperty``, which reads a ``.vnnlib`` file into the input query), solved by
  ``MarabouCore.solve`` with ``createOptions(timeoutInSeconds=..., verbosity=0)`` (one worker, the
  defaults otherwise: DeepPoly tightening, no Gurobi in the wheel), on the file as it is (the output
  disjunction becomes one disjunction constraint of the query). ``--marabou-mode split`` instead writes
  one property file per disjunct of the output ``(or (and ...) ...)`` and solves them one after the other
  in the remaining budget (sat at the first sat disjunct, unsat when all are): measured on 256x2 at 60 s,
  whole is faster on the easy unsat properties (prop_2_0.03 6.1 s vs 15.8 s, prop_11_0.03 5.7 vs 14.9:
  split pays Marabou's preprocessing once per disjunct) and on prop_14_0.05 (sat, 25.0 vs 41.7 s), and
  neither proves prop_0_0.03 in 60 s, so whole is the default.

Every ``sat`` counterexample of either tool is checked here, independently of both tools' parsers: the
VNN-LIB asserts are evaluated on the input as reported and on the outputs onnxruntime computes for it
(float32, as the file declares); ``confirmed`` means every assert holds exactly. An ``unsat`` where the
consensus says ``sat`` (or the majority does, for the one CONFLICT instance) is printed as UNSOUND.

Printed and written (``--out``, default ``benchmarks/results/``: ``verification_peers.json`` after every
instance, so a partial run keeps what it did, ``verification_peers.md``, and every counterexample as
``counterexamples/TOOL_NET_PROP.npy``): per instance both results and times, the consensus and
alpha-beta-CROWN's result; instances solved by each; median time on the instances
both solve and the ratio ours / Marabou (goal <= 0.5); disagreements with a sound verdict; sat confirmed.

    python benchmarks/verification_peers.py --timeout 120            # full: 89 instances x 120 s x 2 tools
    python benchmarks/verification_peers.py --nets 256x2 --timeout 30 --jobs 2     # quick figures
    python benchmarks/verification_peers.py [--nets 256x2 256x4 256x6] [--limit N] [--timeout S]
        [--props prop_0_0.05 ...] [--jobs 1|2] [--tools threedb marabou] [--marabou-mode whole|split]
        [--tighten lp|milp|none] [--out DIR] [--resume]

The csv gives 256x2 120 s and 256x4 / 256x6 300 s (VNN-COMP 2021's budgets, which alpha-beta-CROWN's row
had); ``--timeout 120`` caps them all at 120 s (the issue's setting). The full run takes up to 89 x 120 s
per tool (about 3 h at ``--jobs 2``; 89 x 300 s at the csv's budgets: up to 7 h); ``--resume`` continues an
interrupted one. The figures in the issue's note came from

    python benchmarks/verification_peers.py --timeout 120 --jobs 2 --resume
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "vnncomp2021"
BENCH = DATA / "mnistfc"
RESULTS = DATA / "results"
#: seconds a tool's subprocess may run past its budget before it is killed (interpreter start, writing its
#: answer); an answer after the budget counts as a timeout anyway
GRACE = 5.0
SOLVED = ("sat", "unsat")


# --------------------------------------------------------------------------- VNN-LIB, independently

def sexprs(text: str) -> list:
    """The top-level s-expressions of ``text`` (``;`` comments dropped) as nested lists of strings."""
    tokens = re.findall(r"\(|\)|[^\s()]+", re.sub(r";[^\n]*", "", text))
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise ValueError("unbalanced parentheses")
    return stack[0]


def unparse(expr) -> str:
    return expr if isinstance(expr, str) else "(" + " ".join(unparse(e) for e in expr) + ")"


def evaluate(expr, values: dict[str, float]):
    """The value of a VNN-LIB term or formula with the variables in ``values``."""
    if isinstance(expr, str):
        return values[expr] if expr in values else float(expr)
    op, args = expr[0], [evaluate(a, values) for a in expr[1:]]
    if op == "and":
        return all(args)
    if op == "or":
        return any(args)
    if op == "+":
        return sum(args)
    if op == "-":
        return -args[0] if len(args) == 1 else args[0] - sum(args[1:])
    if op == "*":
        return math.prod(args)
    if op == "/":
        return args[0] / args[1]
    compare = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
               ">": lambda a, b: a > b, "=": lambda a, b: a == b}
    if op in compare:
        return all(compare[op](a, b) for a, b in zip(args, args[1:]))
    raise ValueError(f"unsupported VNN-LIB operator {op!r}")


def asserts(path: Path) -> list:
    return [form[1] for form in sexprs(path.read_text()) if isinstance(form, list) and form and form[0] == "assert"]


def check_counterexample(onnx: Path, vnnlib: Path, x: np.ndarray) -> dict:
    """onnxruntime's outputs at ``x`` and whether every assert of ``vnnlib`` holds there (``confirmed``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    y = np.asarray(session.run(None, {inp.name: np.asarray(x, dtype=dtype).reshape(shape)})[0],
                   dtype=np.float64).reshape(-1)
    values = {f"X_{i}": float(v) for i, v in enumerate(np.asarray(x, dtype=np.float64).reshape(-1))}
    values.update({f"Y_{j}": float(v) for j, v in enumerate(y)})
    holds = [bool(evaluate(a, values)) for a in asserts(vnnlib)]
    return {"confirmed": all(holds), "failed_asserts": len(holds) - sum(holds), "output": y.tolist()}


def split_disjuncts(vnnlib: Path, folder: Path) -> Optional[list[Path]]:
    """One VNN-LIB file per disjunct of the (single) output ``or`` assert; ``None`` if there is no such assert."""
    forms = sexprs(vnnlib.read_text())
    ors = [i for i, f in enumerate(forms) if isinstance(f, list) and f[:1] == ["assert"]
           and isinstance(f[1], list) and f[1][:1] == ["or"]]
    if len(ors) != 1:
        return None
    index = ors[0]
    rest = [unparse(f) for i, f in enumerate(forms) if i != index]
    files = []
    for k, disjunct in enumerate(forms[index][1][1:]):
        path = folder / f"{vnnlib.stem}.d{k}.vnnlib"
        path.write_text("\n".join(rest + [f"(assert {unparse(disjunct)})"]) + "\n")
        files.append(path)
    return files


# --------------------------------------------------------------------------- the two tools (subprocesses)

def worker_threedb(onnx: Path, vnnlib: Path, budget: float, tighten: str, complete: str, start: float) -> dict:
    import torch

    torch.set_num_threads(1)
    from threedb.robustness.verification import check_instance, from_onnx, parse_vnnlib
    from threedb.robustness.verification.verifier import VerifierOptions, verify

    network = from_onnx(onnx)
    specs = parse_vnnlib(vnnlib)
    check_instance(network, specs, onnx, vnnlib)
    prepare = time.perf_counter() - start

    class Check:   # onnxruntime on the original file: sat only when it agrees
        def __init__(self) -> None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
            inp = self.session.get_inputs()[0]
            self.name, self.shape = inp.name, [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]

        def __call__(self, x: np.ndarray) -> np.ndarray:
            out = self.session.run(None, {self.name: np.asarray(x, np.float32).reshape(self.shape)})[0]
            return np.asarray(out, dtype=np.float64).reshape(-1)

    options = VerifierOptions(timeout=max(budget - (time.perf_counter() - start), 0.01), threads=1, tighten=tighten,
                              complete=complete)
    result = verify(network, specs, options, check=Check())
    out = {"status": result.status, "seconds": time.perf_counter() - start, "prepare_seconds": prepare,
           "method": result.method, "message": result.message, "stats": result.stats}
    if result.counterexample is not None:
        out["counterexample"] = np.asarray(result.counterexample, dtype=np.float64).tolist()
    return out


def worker_marabou(onnx: Path, vnnlib: Path, budget: float, mode: str, start: float) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Tensorflow parser is unavailable"
        from maraboupy import Marabou, MarabouCore
    network = Marabou.read_onnx(str(onnx))
    with tempfile.TemporaryDirectory() as tmp:
        files = split_disjuncts(vnnlib, Path(tmp)) if mode == "split" else None
        files = files or [vnnlib]
        prepare = time.perf_counter() - start
        codes = []
        for path in files:
            left = budget - (time.perf_counter() - start)
            if left < 1.0:
                return {"status": "timeout", "seconds": time.perf_counter() - start, "prepare_seconds": prepare,
                        "disjunct_codes": codes}
            query = network.getInputQuery()   # a fresh query: loadProperty adds to it
            MarabouCore.loadProperty(query, str(path))
            options = Marabou.createOptions(timeoutInSeconds=int(math.ceil(left)), verbosity=0, numWorkers=1)
            code, vals, stats = MarabouCore.solve(query, options, "")
            codes.append(code)
            if code == "sat":
                x = [vals[query.inputVariableByIndex(i)] for i in range(query.getNumInputVariables())]
                return {"status": "sat", "seconds": time.perf_counter() - start, "prepare_seconds": prepare,
                        "disjunct_codes": codes, "counterexample": x}
            if code != "unsat":
                status = "timeout" if code == "TIMEOUT" or stats.hasTimedOut() else code.lower()
                return {"status": status, "seconds": time.perf_counter() - start, "prepare_seconds": prepare,
                        "disjunct_codes": codes}
    return {"status": "unsat", "seconds": time.perf_counter() - start, "prepare_seconds": prepare,
            "disjunct_codes": codes}


def worker_main(args: argparse.Namespace) -> int:
    start = time.perf_counter()   # the tool's clock: its imports, reading the files, solving
    onnx, vnnlib = Path(args.onnx), Path(args.vnnlib)
    try:
        if args.worker == "threedb":
            out = worker_threedb(onnx, vnnlib, args.budget, args.tighten, args.complete, start)
        else:
            out = worker_marabou(onnx, vnnlib, args.budget, args.marabou_mode, start)
    except Exception as exc:  # noqa: BLE001 - a tool's failure is its 'error' result, reported not raised
        out = {"status": "error", "seconds": None, "message": f"{type(exc).__name__}: {exc}"[:500]}
    Path(args.result).write_text(json.dumps(out))
    return 0


class Run:
    """One tool on one instance in a subprocess of this script (``--worker``), killed past its budget."""

    def __init__(self, tool: str, onnx: Path, vnnlib: Path, budget: float, args: argparse.Namespace,
                 folder: Path) -> None:
        self.tool, self.budget = tool, budget
        self.result = folder / f"{tool}.json"
        self.log = open(folder / f"{tool}.log", "w")
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--onnx", str(onnx),
                   "--vnnlib", str(vnnlib), "--budget", str(budget), "--result", str(self.result),
                   "--tighten", args.tighten, "--complete", args.complete, "--marabou-mode", args.marabou_mode]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def wait(self) -> dict:
        try:
            self.process.wait(timeout=max(self.budget + GRACE - (time.perf_counter() - self.started), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.log.close()
        wall = time.perf_counter() - self.started
        if not self.result.is_file():
            killed = self.process.returncode == -9
            out = {"status": "timeout" if killed else "error", "seconds": None,
                   "message": "killed at the budget" if killed else f"exit status {self.process.returncode}: "
                   + (self.result.parent / f"{self.tool}.log").read_text()[-400:]}
        else:
            out = json.loads(self.result.read_text())
        out["wall_seconds"] = wall
        if out["status"] in SOLVED and (out.get("seconds") or 0.0) > self.budget:
            out["message"] = f"answered {out['status']} after the budget ({out['seconds']:.1f} s)"
            out["status"] = "timeout"
        return out


# --------------------------------------------------------------------------- references

def load_instances(nets: list[str]) -> list[tuple[str, str, float]]:
    rows = []
    with open(BENCH / "mnistfc_instances.csv") as f:
        for onnx, vnnlib, timeout in csv.reader(f):
            if any(f"_{n}." in onnx for n in nets):
                rows.append((onnx.strip(), vnnlib.strip(), float(timeout)))
    return rows


def load_consensus() -> dict[tuple[str, str], dict]:
    out = {}
    with open(RESULTS / "mnistfc_consensus.csv") as f:
        for row in csv.reader(f):
            onnx, vnnlib, verdict, n_sat, n_unsat = row[:5]
            sound = verdict if verdict in SOLVED else None
            if verdict == "CONFLICT":   # one tool answered against the majority: take the majority
                sound = "sat" if int(n_sat) > int(n_unsat) else "unsat"
            out[(onnx, vnnlib)] = {"verdict": verdict, "sound": sound, "sat_votes": int(n_sat),
                                   "unsat_votes": int(n_unsat)}
    return out


def load_vnncomp_row(tool_csv: str) -> dict[tuple[str, str], dict]:
    """A tool's VNN-COMP 2021 mnistfc rows: result normalised to sat/unsat/timeout/other, time in seconds."""
    names = {"sat": "sat", "violated": "sat", "unsat": "unsat", "holds": "unsat"}
    out = {}
    with open(RESULTS / tool_csv) as f:
        for row in csv.reader(f):
            if len(row) < 6 or row[0] != "mnistfc" or "mnistfc" not in row[1]:
                continue
            result = row[4].strip().lower()
            out[(Path(row[1]).name, Path(row[2]).name)] = {
                "result": names.get(result, "timeout" if "timeout" in result else (result or "none")),
                "seconds": float(row[5]) if row[5] else None}
    return out


# --------------------------------------------------------------------------- summary

def summarize(rows: list[dict], tools: list[str]) -> dict:
    summary: dict = {"instances": len(rows)}
    for tool in tools + ["abcrown_2021", "marabou_2021"]:
        results = [r[tool]["result"] if tool.endswith("2021") else r[tool]["status"] for r in rows if tool in r]
        solved = sum(s in SOLVED for s in results)
        summary[tool] = {"solved": solved, "sat": results.count("sat"), "unsat": results.count("unsat"),
                         "timeout": results.count("timeout"), "other": len(results) - solved - results.count("timeout")}
        if tool.endswith("2021"):   # its 2021 budgets were 120 s / 300 s: solved within this run's budget too
            summary[tool]["solved_within_budget"] = sum(
                r[tool]["result"] in SOLVED and r[tool]["seconds"] is not None and r[tool]["seconds"] <= r["budget"]
                for r in rows)
        else:
            sats = [r[tool] for r in rows if r[tool]["status"] == "sat"]
            summary[tool]["sat_confirmed"] = sum(bool(s.get("check", {}).get("confirmed")) for s in sats)
            wrong = [f"{r['onnx']} {r['vnnlib']}: {r[tool]['status']} vs consensus {r['consensus']['sound']}"
                     for r in rows if r["consensus"]["sound"] and r[tool]["status"] in SOLVED
                     and r[tool]["status"] != r["consensus"]["sound"]]
            summary[tool]["disagreements"] = wrong
            summary[tool]["unsound"] = [w for w in wrong if ": unsat vs consensus sat" in w]
            summary[tool]["beyond_consensus"] = sum(r[tool]["status"] in SOLVED and not r["consensus"]["sound"]
                                                    for r in rows)
    if {"threedb", "marabou"} <= set(tools):
        both = [r for r in rows if r["threedb"]["status"] in SOLVED and r["marabou"]["status"] in SOLVED]
        summary["both_solved"] = len(both)
        summary["tools_disagree"] = [f"{r['onnx']} {r['vnnlib']}: threedb {r['threedb']['status']}, Marabou "
                                     f"{r['marabou']['status']}" for r in both
                                     if r["threedb"]["status"] != r["marabou"]["status"]]
        if both:
            ours = statistics.median(r["threedb"]["seconds"] for r in both)
            theirs = statistics.median(r["marabou"]["seconds"] for r in both)
            summary.update(median_threedb=ours, median_marabou=theirs, ratio=ours / theirs if theirs else None)
            # the same without each tool's start-up (imports, reading the files): the solvers alone
            ours = statistics.median(r["threedb"]["seconds"] - r["threedb"]["prepare_seconds"] for r in both)
            theirs = statistics.median(r["marabou"]["seconds"] - r["marabou"]["prepare_seconds"] for r in both)
            summary.update(median_threedb_solve=ours, median_marabou_solve=theirs,
                           ratio_solve=ours / theirs if theirs else None)
        loads = [r["load_average"] for r in rows if r.get("load_average") is not None]
        summary["mean_load_average"] = statistics.mean(loads) if loads else None
    return summary


def cell(result: dict) -> str:
    if "result" in result:
        seconds = result.get("seconds")
        return result["result"] + (f" {seconds:.1f}" if seconds is not None else "")
    seconds = result.get("seconds")
    text = result["status"] + (f" {seconds:.1f}" if seconds is not None else "")
    if result["status"] == "sat":
        text += " ✓" if result.get("check", {}).get("confirmed") else " (UNCONFIRMED)"
    return text


def markdown(rows: list[dict], summary: dict, tools: list[str], settings: dict) -> str:
    lines = ["# mnistfc: threedb vs Marabou 2.0.0", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
             "", "| network | property | consensus | a-b-CROWN 2021 | Marabou 2021 | " + " | ".join(tools) + " |",
             "|---|---|---|---|---|" + "---|" * len(tools)]
    for r in rows:
        lines.append(f"| {r['onnx']} | {r['vnnlib']} | {r['consensus']['verdict']} | {cell(r['abcrown_2021'])} | "
                     f"{cell(r['marabou_2021'])} | " + " | ".join(cell(r[t]) for t in tools) + " |")
    lines += ["", "| | solved | within this run's budgets | sat | unsat | timeout | other | sat confirmed | "
              "disagreements |", "|---|---|---|---|---|---|---|---|---|"]
    for tool in tools + ["abcrown_2021", "marabou_2021"]:
        s = summary[tool]
        lines.append(f"| {tool} | {s['solved']} | {s.get('solved_within_budget', s['solved'])} | {s['sat']} | "
                     f"{s['unsat']} | {s['timeout']} | {s['other']} | {s.get('sat_confirmed', '')} | "
                     f"{len(s['disagreements']) if 'disagreements' in s else ''} |")
    if "ratio" in summary:
        lines += ["", f"Median time on the {summary['both_solved']} instances both solve: threedb "
                  f"{summary['median_threedb']:.2f} s, Marabou {summary['median_marabou']:.2f} s, ratio "
                  f"{summary['ratio']:.3f} (goal <= 0.5); without start-up (imports, reading the files): threedb "
                  f"{summary['median_threedb_solve']:.2f} s, Marabou {summary['median_marabou_solve']:.2f} s, ratio "
                  f"{summary['ratio_solve']:.3f}. Mean 1-minute load average during the run: "
                  f"{summary['mean_load_average'] or 0:.2f} on {os.cpu_count()} cores."]
    for tool in tools:
        for w in summary[tool]["disagreements"]:
            lines.append(f"- {tool} disagrees: {w}")
    return "\n".join(lines) + "\n"


def report(rows: list[dict], tools: list[str], settings: dict, out: Path) -> dict:
    summary = summarize(rows, tools)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verification_peers.json").write_text(json.dumps({"settings": settings, "summary": summary,
                                                             "instances": rows}, indent=1))
    (out / "verification_peers.md").write_text(markdown(rows, summary, tools, settings))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=["256x2", "256x4", "256x6"])
    parser.add_argument("--props", nargs="+", default=None, help="only these property files (e.g. prop_0_0.05)")
    parser.add_argument("--all-instances", action="store_true",
                        help="also 256x6 prop_14_0.05, which the csv lists but VNN-COMP 2021 did not run")
    parser.add_argument("--limit", type=int, default=None, help="first N instances (after --nets, --props)")
    parser.add_argument("--timeout", type=float, default=None, help="cap on the per-instance budget (s)")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2)
    parser.add_argument("--tools", nargs="+", choices=("threedb", "marabou"), default=["threedb", "marabou"])
    parser.add_argument("--marabou-mode", choices=("split", "whole"), default="whole")
    parser.add_argument("--tighten", choices=("none", "lp", "milp"), default="lp")
    parser.add_argument("--complete", choices=("bab", "milp"), default="bab", help="threedb's last step")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--resume", action="store_true",
                        help="keep the instances --out's verification_peers.json already has (same budget and tools)")
    parser.add_argument("--reuse", nargs="+", choices=("threedb", "marabou"), default=[],
                        help="take these tools' results from --reuse-from (same instances and budgets) instead of "
                        "running them again; the settings and the report say so (the timings then come from two runs)")
    parser.add_argument("--reuse-from", type=Path, help="a verification_peers.json to take --reuse tools from")
    parser.add_argument("--worker", choices=("threedb", "marabou"), help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--vnnlib", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    if not BENCH.is_dir():
        print(f"skipped: {BENCH} not found (public VNN-COMP 2021 data)")
        return 0
    consensus, abcrown, marabou21 = load_consensus(), load_vnncomp_row("a-b-CROWN.csv"), load_vnncomp_row("Marabou.csv")
    # the csv lists 90 instances; VNN-COMP 2021 ran (and the consensus covers) 89 of them
    instances = [i for i in load_instances(args.nets) if args.all_instances or (i[0], i[1]) in consensus]
    instances = [i for i in instances
                 if not args.props or i[1].removesuffix(".vnnlib") in {p.removesuffix(".vnnlib") for p in args.props}
                 ][:args.limit]
    if not instances:
        print("no instance matches --nets / --props")
        return 2
    tools = args.tools
    settings = {"instances": len(instances), "nets": " ".join(args.nets), "timeout cap": args.timeout,
                "jobs": args.jobs, "marabou mode": args.marabou_mode, "tighten": args.tighten,
                "complete": args.complete,
                "cpus": os.cpu_count()}
    print(f"mnistfc: {len(instances)} instances, tools {' '.join(tools)}, jobs {args.jobs}, budget "
          + (f"min(csv, {args.timeout:g}) s" if args.timeout else "the csv's") + f", Marabou mode {args.marabou_mode}",
          flush=True)
    print(f"{'#':>3} {'network':<22} {'property':<20} {'consensus':<9} {'a-b-CROWN':<12} "
          + " ".join(f"{t:<18}" for t in tools), flush=True)
    reused: dict[tuple, dict] = {}
    if args.reuse:
        if not args.reuse_from or not args.reuse_from.is_file():
            print("--reuse needs --reuse-from FILE (a verification_peers.json)")
            return 2
        stamp = time.ctime(args.reuse_from.stat().st_mtime)
        settings["reused"] = f"{' '.join(args.reuse)} from {args.reuse_from.name} ({stamp})"
        for row in json.loads(args.reuse_from.read_text())["instances"]:
            if all(t in row for t in args.reuse):
                reused[(row["onnx"], row["vnnlib"], row["budget"])] = row
    rows: list[dict] = []
    done: dict[tuple, dict] = {}
    previous = args.out / "verification_peers.json"
    if args.resume and previous.is_file():
        for row in json.loads(previous.read_text())["instances"]:
            if all(t in row for t in tools):
                done[(row["onnx"], row["vnnlib"], row["budget"])] = row
    with tempfile.TemporaryDirectory(prefix="verification_peers_") as tmp:
        for number, (onnx_name, vnnlib_name, csv_timeout) in enumerate(instances, 1):
            budget = min(csv_timeout, args.timeout) if args.timeout else csv_timeout
            if (onnx_name, vnnlib_name, budget) in done:
                row = done[(onnx_name, vnnlib_name, budget)]
                rows.append(row)
                print(f"{number:>3} {onnx_name:<22} {vnnlib_name:<20} {row['consensus']['verdict']:<9} "
                      f"{cell(row['abcrown_2021']):<12} " + " ".join(f"{cell(row[t]):<18}" for t in tools)
                      + " (resumed)", flush=True)
                continue
            onnx, vnnlib = BENCH / onnx_name, BENCH / vnnlib_name
            folder = Path(tmp) / str(number)
            folder.mkdir()
            results: dict[str, dict] = {}
            earlier = reused.get((onnx_name, vnnlib_name, budget))
            if args.reuse and earlier is None:
                print(f"{number:>3} {onnx_name:<22} {vnnlib_name:<20} skipped: not in {args.reuse_from}", flush=True)
                continue
            running = [t for t in tools if t not in args.reuse]
            load_before = os.getloadavg()[0]
            if args.jobs == 2:
                runs = [Run(t, onnx, vnnlib, budget, args, folder) for t in running]
                results = {run.tool: run.wait() for run in runs}
            else:
                for t in running:
                    results[t] = Run(t, onnx, vnnlib, budget, args, folder).wait()
            key = (onnx_name, vnnlib_name)
            row = {"onnx": onnx_name, "vnnlib": vnnlib_name, "budget": budget,
                   "load_average": (load_before + os.getloadavg()[0]) / 2,
                   "consensus": consensus.get(key, {"verdict": "none", "sound": None}),
                   "abcrown_2021": abcrown.get(key, {"result": "none", "seconds": None}),
                   "marabou_2021": marabou21.get(key, {"result": "none", "seconds": None})}
            for t in tools:
                if t in args.reuse:
                    row[t] = earlier[t]
                    continue
                res = results[t]
                cex = res.pop("counterexample", None)
                if res["status"] == "sat":
                    res["check"] = check_counterexample(onnx, vnnlib, np.asarray(cex)) if cex is not None \
                        else {"confirmed": False, "failed_asserts": None, "output": None}
                if cex is not None:   # kept, so that an unconfirmed one can be looked at again
                    folder_cex = args.out / "counterexamples"
                    folder_cex.mkdir(parents=True, exist_ok=True)
                    path = folder_cex / f"{t}_{Path(onnx_name).stem}_{vnnlib_name.removesuffix('.vnnlib')}.npy"
                    np.save(path, np.asarray(cex, dtype=np.float64))
                    res["counterexample_file"] = str(path)
                row[t] = res
            rows.append(row)
            print(f"{number:>3} {onnx_name:<22} {vnnlib_name:<20} {row['consensus']['verdict']:<9} "
                  f"{cell(row['abcrown_2021']):<12} " + " ".join(f"{cell(row[t]):<18}" for t in tools), flush=True)
            sound = row["consensus"]["sound"]
            for t in tools:
                if sound == "sat" and row[t]["status"] == "unsat":
                    print(f"!!!!! UNSOUND: {t} answers unsat on {onnx_name} {vnnlib_name}, where the consensus "
                          f"({row['consensus']['verdict']}, {row['consensus'].get('sat_votes')} sat votes) is sat "
                          "!!!!!", flush=True)
                if row[t]["status"] == "sat" and not row[t]["check"]["confirmed"]:
                    print(f"!!!!! UNCONFIRMED sat: {t} on {onnx_name} {vnnlib_name}: the counterexample fails "
                          f"{row[t]['check']['failed_asserts']} asserts under onnxruntime !!!!!", flush=True)
                if sound == "unsat" and row[t]["status"] == "sat":
                    print(f"!!!!! {t} answers sat on {onnx_name} {vnnlib_name} where the consensus is unsat "
                          f"(counterexample confirmed: {row[t]['check']['confirmed']}) !!!!!", flush=True)
            report(rows, tools, settings, args.out)
    summary = report(rows, tools, settings, args.out)
    print()
    for tool in tools + ["abcrown_2021", "marabou_2021"]:
        s = summary[tool]
        extra = ""
        if "sat_confirmed" in s:
            extra = (f"; sat confirmed by onnxruntime {s['sat_confirmed']}/{s['sat']}; disagreements with the "
                     f"consensus {len(s['disagreements'])} (unsound {len(s['unsound'])}); solved where the "
                     f"consensus has no verdict {s['beyond_consensus']}")
        if "solved_within_budget" in s:
            extra = f"; within this run's budgets {s['solved_within_budget']}"
        print(f"{tool:<13} solved {s['solved']:>3}/{len(rows)} (sat {s['sat']}, unsat {s['unsat']}, timeout "
              f"{s['timeout']}, other {s['other']}){extra}")
    if "ratio" in summary:
        print(f"median time on the {summary['both_solved']} instances both solve: threedb "
              f"{summary['median_threedb']:.2f} s, "
              f"Marabou {summary['median_marabou']:.2f} s; ours / Marabou {summary['ratio']:.3f} (goal <= 0.5)")
        print(f"  without each tool's start-up (imports, reading the files): threedb "
              f"{summary['median_threedb_solve']:.2f} s, Marabou {summary['median_marabou_solve']:.2f} s; ratio "
              f"{summary['ratio_solve']:.3f}")
        print(f"  mean 1-minute load average while running: {summary['mean_load_average'] or 0:.2f} "
              f"({os.cpu_count()} cores)")
        for d in summary["tools_disagree"]:
            print(f"tools disagree: {d}")
    for tool in tools:
        for w in summary[tool]["unsound"]:
            print(f"!!!!! UNSOUND ({tool}): {w}")
    if "marabou" in tools and "threedb" in tools:
        goals = [summary["threedb"]["solved"] >= summary["marabou"]["solved"],
                 summary["threedb"]["solved"] >= summary["abcrown_2021"]["solved"],
                 summary.get("ratio") is not None and summary["ratio"] <= 0.5,
                 not summary["threedb"]["disagreements"]]
        print(f"goals: solved >= Marabou {'yes' if goals[0] else 'NO'}; solved >= a-b-CROWN 2021 "
              f"{'yes' if goals[1] else 'NO'}; median ratio <= 0.5 {'yes' if goals[2] else 'NO'}; no disagreement "
              f"with a sound verdict {'yes' if goals[3] else 'NO'}")
    print(f"written: {args.out / 'verification_peers.json'}, {args.out / 'verification_peers.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
