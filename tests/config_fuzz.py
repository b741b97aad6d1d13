"""Seeded mutations of the quickstart config, each checked as ``threedb run`` checks a config before it starts.

A case is the quickstart experiment's resolved config (every third case: the original-3DB example
config, with the quickstart's model) with one to three mutations (a value replaced by
a hostile one, a key dropped or added, a list and a mapping swapped) or the YAML text itself damaged
(cut short, a byte changed, a line doubled, indentation broken). Each case runs through
``load_config`` -> ``prepare`` -> ``check_run`` (the preflight of ``threedb run``) under an alarm and a
memory limit. The outcome is ``ok``, ``error`` (a one-line :class:`ThreeDBError`, what a user sees) or a
finding: ``crash`` (any other exception: a traceback in front of the user), ``hang`` (over the time
limit), ``multiline`` (an error message over several lines or with terminal control characters).

``python tests/config_fuzz.py --cases 500 --seed 0`` prints the counts (JSON); tests/test_config_fuzz.py
runs a few hundred cases and requires no finding.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
#: An original-3DB config (its legacy forms are fuzzed too), given the quickstart's model.
LEGACY = Path(__file__).resolve().parents[1] / "configs" / "legacy_3db_example.yaml"
#: Per-case limits: seconds of wall time, bytes of address space for the whole process.
CASE_SECONDS = 20
ADDRESS_SPACE = 8 << 30


def hostile_values(tmp: Path) -> list[Any]:
    """Values a careless user or an adversary writes where a config expects something else."""
    fifo = tmp / "fifo"
    if not fifo.exists():
        import os

        os.mkfifo(fifo)
    return [None, True, False, 0, -1, 1, 2 ** 31, -(2 ** 63), 2 ** 64, 10 ** 400, 1e308, -1e-320, float("nan"),
            float("inf"), "", " ", "x" * 70_000, "\0", "a\0b", "\x1b[31mred\x1b[0m", "\r\n", "\u202etxt.exe",
            "..", "../../../../etc/passwd", "/etc/shadow", "/dev/zero", str(fifo), "/proc/self/mem", "~nosuchuser/x",
            "a" * 300, "/" + "b/" * 3000, "default", "all", "none", "fog", "cuda", [], {}, [[[]]], {"a": {"b": {}}},
            [None], [1, "x", None], list(range(5000)), {str(i): i for i in range(3000)}, {1: "x"}, {None: 1},
            datetime.date(2001, 12, 14), b"\x00\xff", {1, 2}, [0.5, "nan"], {"type": "orientation"},
            {"module": "os"}, {"file": "/etc/passwd"}, "os:system", "threedb.sim.cli:main", "__import__",
            "0x10", "1e3", "yes", "~", "$HOME", "%s%s%n", "{0.__class__}"]


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _parent(tree: Any, path: tuple) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


def mutate_tree(tree: dict, rng: random.Random, values: list[Any]) -> str:
    """Apply one mutation to ``tree`` in place; return what it did."""
    paths = [p for p in _paths(tree) if p]
    path = rng.choice(paths)
    parent, last = _parent(tree, path), path[-1]
    op = rng.choice(["replace", "replace", "replace", "drop", "add", "swap"])
    if op == "replace":
        value = copy.deepcopy(rng.choice(values))   # never shared: a later mutation must not make a cycle
        parent[last] = value
        return f"{path} = {str(value)[:40]!r}"
    if op == "drop":
        del parent[last]
        return f"del {path}"
    if op == "add":
        target = parent if isinstance(parent, dict) else tree
        name = rng.choice(["extra", "samples", "type", "name", "args", "file", "module", "seed", "rendr", "k" * 300])
        target[name] = copy.deepcopy(rng.choice(values))
        return f"add {name} near {path}"
    value = parent[last]
    if isinstance(value, dict):
        parent[last] = list(value.items())
    elif isinstance(value, list):
        parent[last] = {f"k{i}": v for i, v in enumerate(value)}
    else:
        parent[last] = [value]
    return f"swap {path}"


def damage_text(text: str, rng: random.Random) -> str:
    """The YAML text with one line-level or byte-level damage."""
    lines = text.splitlines(keepends=True)
    op = rng.choice(["cut", "byte", "double", "indent", "tab", "anchor"])
    if op == "cut":
        return text[:rng.randrange(len(text))]
    if op == "byte":
        i = rng.randrange(len(text))
        return text[:i] + rng.choice(":-[]{}&*!|>'\"#%@`,?\t\n\\") + text[i + 1:]
    i = rng.randrange(len(lines))
    if op == "double":
        lines.insert(i, lines[i])
    elif op == "indent":
        lines[i] = " " * rng.choice([1, 3, 7]) + lines[i]
    elif op == "tab":
        lines[i] = "\t" + lines[i]
    else:
        lines[i] = lines[i].replace(": ", ": &a ", 1) + "x: *a\n"
    return "".join(lines)


def cases(seed: int, count: int, tmp: Path) -> Iterator[tuple[str, str]]:
    """``count`` (description, YAML text) cases, the same for the same seed."""
    from threedb.sim.config import load_config

    base = load_config(QUICKSTART).resolved
    legacy = {**yaml.safe_load(LEGACY.read_text()), "inference": base["inference"], "evaluation": base["evaluation"]}
    values = hostile_values(tmp)
    rng = random.Random(seed)
    for i in range(count):
        tree = json.loads(json.dumps(legacy if i % 3 == 2 else base))
        if rng.random() < 0.25:
            text = yaml.safe_dump(tree, sort_keys=False)
            yield "text damaged", damage_text(text, rng)
            continue
        what = [mutate_tree(tree, rng, values) for _ in range(rng.choice([1, 1, 2, 3]))]
        yield "; ".join(what), yaml.safe_dump(tree, sort_keys=False, allow_unicode=False)


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout()


def check_case(path: Path, *, model: bool) -> tuple[str, str]:
    """``(outcome, detail)`` of one config file run through ``threedb run``'s checks."""
    from threedb.sim.config import load_config
    from threedb.sim.errors import ThreeDBError, printable
    from threedb.sim.experiment import prepare
    from threedb.sim.run.preflight import check_run

    signal.alarm(CASE_SECONDS)
    try:
        check_run(prepare(load_config(path)), load_model_check=model)
        return "ok", ""
    except ThreeDBError as exc:
        shown = printable(str(exc))   # what the CLI prints
        return ("multiline" if "\n" in shown else "error"), shown[:300]
    except _Timeout:
        return "hang", ""
    except (Exception, RecursionError, MemoryError):
        return "crash", "\n".join(line[:160] for line in traceback.format_exc().splitlines()[-12:])
    finally:
        signal.alarm(0)


def run(seed: int, count: int, *, model_every: int = 10, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``count`` cases; the summary has the counts per outcome and every finding in full."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (min(ADDRESS_SPACE, hard) if hard > 0 else ADDRESS_SPACE, hard))
    signal.signal(signal.SIGALRM, _alarm)
    counts: dict[str, int] = {}
    findings: list[dict[str, str]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for i, (what, text) in enumerate(cases(seed, count, tmp)):
            path = tmp / f"case{i}.yaml"
            path.write_text(text, encoding="utf-8")
            outcome, detail = check_case(path, model=i % model_every == 0)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome not in ("ok", "error"):
                findings.append({"case": str(i), "mutation": what, "outcome": outcome, "detail": detail})
            if log is not None:
                log(f"{i:4d} {outcome:9s} {what[:70]} :: {detail[:120]!r}")
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return {"seed": seed, "cases": count, "counts": counts, "findings": findings,
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="one line per case on stderr")
    args = parser.parse_args(argv)
    summary = run(args.seed, args.cases, log=(lambda line: print(line, file=sys.stderr)) if args.verbose else None)
    print(json.dumps(summary, indent=1))
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
