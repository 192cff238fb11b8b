"""Search quality: asyncopt's algorithms against Hyperopt 0.3.0 and Optuna 5.0.0.

Every algorithm runs on the same problems (benchmarks/problems.py) and seeds, in one
process. asyncopt's suggest functions are driven by a plain loop (suggest → evaluate →
`HistoryBuilder.update`); Hyperopt through `fmin`; Optuna through `study.optimize` with
its default, seeded `TPESampler`. The table reports the mean over seeds of the best loss
after 50, 100 and 200 evaluations.

The parallel part keeps 16 trials pending at every suggestion (each proposal is
evaluated only after 16 later ones were made) and reports regret (best − optimum) at
200 evaluations, with the constant liar on and off, against the sequential run.

    python benchmarks/bench_quality.py --seeds 15       # writes docs/benchmarks.md
    python benchmarks/bench_quality.py --seeds 30 --only-parallel --fresh

``--only-parallel`` runs just the parallel part (and the sequential runs it compares
with) and rewrites only its own section of docs/benchmarks.md.

Results are cached per (algorithm, problem, seed, mode) in ``--cache`` (JSON), so a run
can add algorithms or seeds without redoing the others; ``--fresh`` ignores the cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asyncopt.history import HistoryBuilder
from asyncopt.space.compile import compile_space
from asyncopt.space.evaluate import space_eval
from asyncopt.storage.base import Trial, TrialState
from problems import PROBLEMS, Problem

CHECKPOINTS = (50, 100, 200)
PARALLEL_PENDING = 16
PARALLEL_PROBLEMS = ("branin", "hartmann6")


def _ours(name: str) -> Callable[..., Any] | None:
    from asyncopt.algorithms import rand, tpe

    if name == "asyncopt-tpe":
        return tpe.suggest
    if name == "asyncopt-tpe-hyperopt":
        return tpe.configure(preset="hyperopt")
    if name == "asyncopt-rand":
        return rand.suggest
    if name == "asyncopt-anneal":
        try:
            from asyncopt.algorithms import anneal
        except ImportError:
            return None
        return getattr(anneal, "suggest", None)
    if name == "asyncopt-tpe-noliar":
        return tpe.configure(constant_liar=False)
    raise KeyError(name)


OURS = ("asyncopt-tpe", "asyncopt-tpe-hyperopt", "asyncopt-anneal", "asyncopt-rand")
PEERS = ("optuna-tpe", "hyperopt-tpe", "hyperopt-anneal", "hyperopt-rand")


def run_asyncopt(
    suggest: Callable[..., Any],
    problem: Problem,
    seed: int,
    n_evals: int,
    pending: int = 0,
) -> list[float]:
    """Losses in evaluation order; ``pending`` proposals wait before being evaluated."""
    space = compile_space(problem.asyncopt_space())
    builder = HistoryBuilder(space)
    rng = np.random.default_rng(seed)
    queue: deque[Trial] = deque()
    losses: list[float] = []
    created = 0

    def finish(trial: Trial) -> None:
        loss = problem.loss(space_eval(space, trial.assignment))
        losses.append(loss)
        builder.update([Trial("b", trial.tid, TrialState.OK, trial.assignment, loss=loss)])

    while created < n_evals:
        (assignment,) = suggest(space, builder.snapshot(), rng, 1)
        trial = Trial("b", created, TrialState.RUNNING, assignment)
        created += 1
        builder.update([trial])
        queue.append(trial)
        if len(queue) > pending:
            finish(queue.popleft())
    while queue:
        finish(queue.popleft())
    return losses


def run_hyperopt(algo: str, problem: Problem, seed: int, n_evals: int) -> list[float]:
    import hyperopt

    module = {"tpe": hyperopt.tpe, "anneal": hyperopt.anneal, "rand": hyperopt.rand}[algo]
    trials = hyperopt.Trials()
    hyperopt.fmin(
        problem.loss,
        problem.hyperopt_space(),
        algo=module.suggest,
        max_evals=n_evals,
        trials=trials,
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )
    return [float(x) for x in trials.losses()]


def run_optuna(problem: Problem, seed: int, n_evals: int) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(lambda t: problem.loss(problem.optuna_params(t)), n_trials=n_evals)
    return [float(t.value) for t in study.trials]


def run(algo: str, problem: Problem, seed: int, n_evals: int, pending: int) -> list[float] | None:
    if algo.startswith("asyncopt"):
        suggest = _ours(algo)
        if suggest is None:
            return None
        return run_asyncopt(suggest, problem, seed, n_evals, pending)
    if algo == "optuna-tpe":
        return run_optuna(problem, seed, n_evals)
    if algo.startswith("hyperopt-"):
        return run_hyperopt(algo.split("-", 1)[1], problem, seed, n_evals)
    raise KeyError(algo)


def best_at(losses: list[float], k: int) -> float:
    return float(np.min(losses[:k]))


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if abs(x) >= 100 or abs(x) < 1e-2:
        return f"{x:.3g}"
    return f"{x:.4g}" if abs(x) < 1 else f"{x:.3f}"


def quality_table(results: dict[str, Any], algos: list[str], seeds: list[int]) -> str:
    lines = []
    for key, problem in PROBLEMS.items():
        lines.append(f"#### {problem.name} (optimum {problem.optimum:g})\n")
        lines.append(
            "| algorithm | best@50 | best@100 | best@200 | regret@100 vs Optuna | "
            "regret@200 vs Optuna | seconds/run |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        means: dict[str, list[float]] = {}
        timing: dict[str, float] = {}
        for algo in algos:
            runs = [results.get(f"{algo}|{key}|{s}|0") for s in seeds]
            if any(r is None for r in runs):
                continue
            means[algo] = [
                float(np.mean([best_at(r["losses"], k) for r in runs])) for k in CHECKPOINTS
            ]
            timing[algo] = float(np.mean([r["seconds"] for r in runs]))
        ref = means.get("optuna-tpe")
        for algo, m in means.items():
            ratios = ["", ""]
            if ref is not None:
                for j, k in enumerate((1, 2)):
                    mine = m[k] - problem.optimum
                    theirs = ref[k] - problem.optimum
                    ratios[j] = f"{mine / theirs:.2f}x" if theirs > 0 else ""
            lines.append(
                f"| {algo} | {_fmt(m[0])} | {_fmt(m[1])} | {_fmt(m[2])} | {ratios[0]} | "
                f"{ratios[1]} | {timing[algo]:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def _ratio_interval(top: np.ndarray, bottom: np.ndarray) -> tuple[float, float]:
    """A 95 % interval of mean(top) / mean(bottom), resampling seeds (pairs kept together)."""
    picks = np.random.default_rng(0).integers(0, len(top), (2000, len(top)))
    ratios = top[picks].mean(axis=1) / bottom[picks].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def parallel_table(results: dict[str, Any], seeds: list[int]) -> str:
    lines = [
        f"| problem | sequential regret@200 | {PARALLEL_PENDING} pending, liar on | "
        f"{PARALLEL_PENDING} pending, liar off | on / sequential (95 % interval) | "
        "off / sequential |",
        "|---|---|---|---|---|---|",
    ]
    for key in PARALLEL_PROBLEMS:
        problem = PROBLEMS[key]
        regrets = []
        for algo, pending in (
            ("asyncopt-tpe", 0),
            ("asyncopt-tpe", PARALLEL_PENDING),
            ("asyncopt-tpe-noliar", PARALLEL_PENDING),
        ):
            runs = [results.get(f"{algo}|{key}|{s}|{pending}") for s in seeds]
            if any(r is None for r in runs):
                regrets.append(np.full(len(seeds), math.nan))
                continue
            regrets.append(np.array([best_at(r["losses"], 200) - problem.optimum for r in runs]))
        seq, on, off = regrets
        low, high = _ratio_interval(on, seq)
        lines.append(
            f"| {problem.name} | {_fmt(seq.mean())} | {_fmt(on.mean())} | {_fmt(off.mean())} | "
            f"{on.mean() / seq.mean():.2f}x ({low:.2f}-{high:.2f}) | "
            f"{off.mean() / seq.mean():.2f}x |"
        )
    return "\n".join(lines)


def more_pending_table(results: dict[str, Any], seeds: list[int], pendings: list[int]) -> str:
    """Regret at 200 with more trials pending (liar on), against the sequential run."""
    lines = [
        "| problem | pending | sequential regret@200 | regret@200 | / sequential (95 % interval) |",
        "|---|---|---|---|---|",
    ]

    def regrets(key: str, pending: int) -> np.ndarray | None:
        runs = [results.get(f"asyncopt-tpe|{key}|{s}|{pending}") for s in seeds]
        if any(r is None for r in runs):
            return None
        optimum = PROBLEMS[key].optimum
        return np.array([best_at(r["losses"], 200) - optimum for r in runs])

    for key in PARALLEL_PROBLEMS:
        problem = PROBLEMS[key]
        seq = regrets(key, 0)
        for pending in pendings:
            more = regrets(key, pending)
            if seq is None or more is None:
                continue
            low, high = _ratio_interval(more, seq)
            lines.append(
                f"| {problem.name} | {pending} | {_fmt(seq.mean())} | {_fmt(more.mean())} | "
                f"{more.mean() / seq.mean():.2f}x ({low:.2f}-{high:.2f}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=15)
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--algos", default=",".join(OURS + PEERS))
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--no-parallel", action="store_true")
    parser.add_argument(
        "--only-parallel",
        action="store_true",
        help="only the parallel part and its sequential baseline; writes only its section",
    )
    parser.add_argument(
        "--more-pending", default="64,200", help="pending counts of the second parallel table"
    )
    parser.add_argument("--more-seeds", type=int, default=30, help="seeds of that table")
    parser.add_argument("--cache", default="benchmarks/results/quality.json")
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    parser.add_argument(
        "--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone"
    )
    args = parser.parse_args()
    logging.getLogger("hyperopt").setLevel(logging.WARNING)

    cache = Path(args.cache)
    results: dict[str, Any] = {}
    if cache.exists() and not args.fresh:
        results = json.loads(cache.read_text())
    seeds = list(range(args.seeds))
    algos = [a for a in args.algos.split(",") if a]
    problems = [p for p in args.problems.split(",") if p]
    more_pending = [int(k) for k in args.more_pending.split(",") if k]
    if args.only_parallel and args.no_parallel:
        parser.error("--only-parallel and --no-parallel exclude each other")
    jobs = (
        [] if args.only_parallel else [(a, p, s, 0) for a in algos for p in problems for s in seeds]
    )
    if not args.no_parallel:
        for p in PARALLEL_PROBLEMS:
            if p in problems:
                for s in seeds:
                    jobs.append(("asyncopt-tpe", p, s, 0))
                    jobs.append(("asyncopt-tpe", p, s, PARALLEL_PENDING))
                    jobs.append(("asyncopt-tpe-noliar", p, s, PARALLEL_PENDING))
                for s in range(args.more_seeds):
                    jobs.append(("asyncopt-tpe", p, s, 0))
                    jobs += [("asyncopt-tpe", p, s, int(k)) for k in more_pending]
    for algo, key, seed, pending in jobs:
        name = f"{algo}|{key}|{seed}|{pending}"
        if name in results:
            continue
        start = time.perf_counter()
        losses = run(algo, PROBLEMS[key], seed, args.evals, pending)
        if losses is None:
            continue
        seconds = time.perf_counter() - start
        results[name] = {"losses": losses, "seconds": seconds}
        print(f"{name}: best {min(losses):.5g} in {seconds:.2f}s", file=sys.stderr)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(results))

    if not args.only_parallel:
        all_algos = [a for a in OURS + PEERS if a in algos]
        text = quality_table(results, all_algos, seeds)
        print(text)
        if not args.no_write:
            _write_section(args.seeds, text)
    if not args.no_parallel:
        table = parallel_table(results, seeds)
        more = more_pending_table(results, list(range(args.more_seeds)), more_pending)
        print(table)
        print(more)
        if not args.no_write:
            _write_parallel_section(args.seeds, table, args.more_seeds, more)


def _write_section(n_seeds: int, text: str) -> None:
    from _report import machine, write_section

    write_section(
        "tpe-quality",
        "## Search quality: TPE, annealing and random search\n\n"
        f"`python benchmarks/bench_quality.py --seeds {n_seeds}` — every algorithm on the same "
        "problems and seeds in one run (asyncopt through a plain suggest → evaluate loop, "
        "Hyperopt 0.3.0 through `fmin`, Optuna 5.0.0 with its default seeded `TPESampler`). "
        f"Mean over {n_seeds} seeds (0..{n_seeds - 1}) of the best loss after 50, 100 and "
        "200 evaluations. The regret ratios compare the distance to the optimum with "
        "Optuna's (below 1: closer than Optuna). Measured on "
        f"{machine()}.\n\n{text}",
    )


def _write_parallel_section(n_seeds: int, table: str, more_seeds: int, more: str) -> None:
    from _report import machine, write_section

    write_section(
        "tpe-parallel",
        f"#### Parallel: {PARALLEL_PENDING} trials pending at every suggestion\n\n"
        f"`python benchmarks/bench_quality.py --seeds {n_seeds} --only-parallel` — the "
        "default TPE on Branin and Hartmann-6, each proposal evaluated only after "
        f"{PARALLEL_PENDING} later ones were made (a simulated `concurrency="
        f"{PARALLEL_PENDING + 1}`). Regret (best − optimum) after 200 evaluations, mean "
        f"over {n_seeds} seeds (0..{n_seeds - 1}), against the sequential run (the interval "
        "resamples seeds, each seed's three runs together). Liar on "
        "(the default): each pending trial is modelled with a loss predicted from its "
        "nearest finished trials (a local Gaussian process), and one predicted to beat "
        "every finished trial takes 4 places of the good group; while trials are believed, "
        "the good group's kernels may be narrower (its magic clip counts twice the "
        "evidence); liar off: pending trials are "
        f"ignored. Measured on {machine()}.\n\n{table}\n\n"
        f"More trials pending (liar on), seeds 0..{more_seeds - 1}: with as many pending as "
        "evaluations (200), no proposal sees any result, so the search is the prior's.\n\n"
        f"{more}",
    )


if __name__ == "__main__":
    main()
