"""Write docs/results.md (and its figures) from the tracking store that docs/experiment.sh filled.

    uv run python docs/results.py --store results-store

For each question (the class count: experiment ``classes``, grouped by ``identities``; the
density at an equal step budget: experiment ``density``, grouped by ``exemplars_per_class``)
it runs ``dsc compare --group-by`` over the experiment's finished training runs (which writes
the per-class fits, both predictors of N and the grouped statistics), then renders from that
comparison's artifacts: the table with t-based 95% intervals, the Spearman trend tests, the
smallest rho the runs could detect at 80% power, both predictors' agreement with N, and a
conclusion whose every claim is computed from those numbers. Figures are copied to
docs/figures/results_<experiment>_<name>.png.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from dsc.core.power import detectable_rho
from dsc.errors import TrackingError
from dsc.jobs.break_ranks import log_break_ranks
from dsc.jobs.compare import compare_job
from dsc.settings import CompareConfig

DOCS = Path(__file__).resolve().parent
QUESTIONS = (
    ("classes", "identities", "Does N follow the class count?", "classes"),
    (
        "density",
        "exemplars_per_class",
        "Does N follow the density, at an equal number of updates?",
        "training images per class",
    ),
)
PLAN = {"classes": ("2", "3", "5", "8", "10"), "density": ("25", "50", "100", "200", "400")}
PLANNED_SEEDS = 8
COLUMNS = (
    ("n_components", "N", 1),
    ("n_from_classes", "N from classes", 1),
    ("class_clusters", "class groups", 1),
    ("r2_1", "R^2 (1)", 3),
    ("r2_2", "R^2 (2)", 3),
    ("center_1", "centre 1", 1),
    ("change_point", "end of latent phase", 1),
    ("final", "final acc/val", 3),
)
FIGURES = ("curves", "n_components", "center_latent")
ALPHA = 0.05


def compare(experiment: str, param: str) -> str | None:
    """A new comparison of the experiment's finished training runs, grouped by ``param``; its id."""
    if mlflow.get_experiment_by_name(experiment) is None:
        return None
    config = CompareConfig(experiments=(experiment,), group_by=(param,), color_by=param)
    try:
        return compare_job(config, warn=lambda line: print(f"warning: {line}"))
    except TrackingError:  # no finished training run in it yet
        return None


def artifacts(run_id: str) -> dict:
    load = mlflow.artifacts.load_dict
    return {
        "table": load(f"runs:/{run_id}/groups/table.json"),
        "trend": load(f"runs:/{run_id}/groups/trend.json"),
        "agreement": load(f"runs:/{run_id}/groups/agreement.json"),
        "classes": load(f"runs:/{run_id}/lld/classes.json"),
    }


def cell(row: dict | None, digits: int, runs: int | None = None) -> str:
    """Mean [95% interval]; the count of runs where it is fewer than the group's ``runs``."""
    if row is None or row["mean"] is None:
        return "-"
    text = f"{row['mean']:.{digits}f}"
    if row["ci_low"] is None:
        return f"{text} ({row['n']} run{'s' if row['n'] != 1 else ''}, no interval)"
    short = f" ({row['n']} runs)" if runs is not None and row["n"] < runs else ""
    return f"{text} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]{short}"


def fmt_p(p: float | None) -> str:
    return "-" if p is None or not math.isfinite(p) else f"{p:.2g}"


def trend_cell(t: dict | None, runs: int | None = None) -> str:
    """rho (p); the count of runs tested where it is fewer than ``runs``."""
    if t is None or t["rho"] is None:
        return "no test" if t is None else f"no test ({t['note']})"
    short = f", {t['n']} runs" if runs is not None and t["n"] < runs else ""
    return f"{t['rho']:+.2f} ({fmt_p(t['p'])}{short})"


def table(art: dict, param: str, columns=COLUMNS) -> tuple[list[str], dict[str, dict]]:
    """The grouped table of ``columns`` ((quantity, label, digits)), one row per group, trends last."""
    rows = {(r["group"], r["quantity"]): r for r in art["table"]}
    groups = list(dict.fromkeys(r["group"] for r in art["table"]))
    n_runs = {r["group"]: r["n_runs"] for r in art["table"]}
    trends = {t["quantity"]: t for t in art["trend"]}
    head = f"| {param} | runs | " + " | ".join(label for _, label, _ in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for g in groups:
        lines.append(
            f"| {g.split('=', 1)[1]} | {n_runs[g]} | "
            + " | ".join(cell(rows.get((g, q)), d, n_runs[g]) for q, _, d in columns)
            + " |"
        )
    total = sum(n_runs.values())
    lines.append(
        f"| Spearman rho (p) | {total} | " + " | ".join(trend_cell(trends.get(q), total) for q, _, _ in columns) + " |"
    )
    return lines, trends


def break_rank_columns(art: dict) -> list[tuple[str, str, int]]:
    """The ``modes/<layer>/break_rank`` quantities the comparison holds, in the network's order."""
    names = dict.fromkeys(r["quantity"] for r in art["table"] if r["quantity"].endswith("/break_rank"))
    order = sorted(names, key=lambda q: (q.split("/")[1] == "all", q.split("/")[1] == "out", q))
    return [(q, f"{q.split('/')[1]} break rank", 1) for q in order]


def break_rank_sentence(art: dict, trends: dict) -> str:
    """What the break ranks say about Li & Huang's prediction (a break near the class count)."""
    parts = []
    for q, label, _ in break_rank_columns(art):
        t = trends.get(q)
        if t is None or t["rho"] is None:
            continue
        means = {
            float(r["group"].split("=", 1)[1]): r["mean"]
            for r in art["table"]
            if r["quantity"] == q and r["mean"] is not None
        }
        ratio = [m / c for c, m in means.items() if c > 0]
        near = f"; its group means are {min(ratio):.1f} to {max(ratio):.1f} times the class count" if ratio else ""
        verdict = (
            "rises with"
            if t["rho"] > 0 and t["p"] < ALPHA
            else ("falls with" if t["rho"] < 0 and t["p"] < ALPHA else "shows no detectable trend with")
        )
        parts.append(
            f"{label} {verdict} the class count (rho {t['rho']:+.2f}, p {fmt_p(t['p'])}, {t['n']} runs){near}."
        )
    if not parts:
        return "No layer's break rank could be tested against the class count."
    return "Li & Huang predict a break of the mode-importance power law near the class count: " + " ".join(parts)


def agreement_lines(art: dict) -> list[str]:
    overall = art["agreement"]["all runs"]
    lines = ["| predictor | runs | share equal to N | Spearman rho with N (p) |", "|---|---|---|---|"]
    for name in ("n_from_classes", "class_clusters"):
        a = overall[name]
        rho = a["note"] if a["rho"] is None else f"{a['rho']:+.2f} ({fmt_p(a['p'])})"
        share = "-" if a["share_equal"] is None else f"{a['share_equal']:.2f}"
        lines.append(f"| `lld/{name}` | {a['n']} | {share} | {rho} |")
    return lines


def conclusion(trends: dict, art: dict, what: str, n_runs: int) -> str:
    """Plain sentences, each following from a number on the page."""
    t = trends.get("n_components")
    d = detectable_rho(n_runs)
    parts = []
    if t is None or t["rho"] is None:
        parts.append(f"No trend test of N against the {what} was possible ({t['note'] if t else 'no runs'}).")
    elif t["p"] < ALPHA:
        way = "rises" if t["rho"] > 0 else "falls"
        parts.append(f"N {way} with the {what}: Spearman rho {t['rho']:+.2f}, p {fmt_p(t['p'])} over {t['n']} runs.")
    else:
        parts.append(
            f"No trend of N with the {what} is detectable: Spearman rho {t['rho']:+.2f}, p "
            f"{fmt_p(t['p'])} over {t['n']} runs."
        )
    if math.isfinite(d):
        power = f"With {n_runs} runs a two-sided test at 5% detects |rho| >= {d:.2f} with 80% power"
        significant = t is not None and t["rho"] is not None and t["p"] < ALPHA
        if significant and abs(t["rho"]) < d:
            parts.append(
                f"{power}; the observed |rho| lies below that, so the trend rests on one test of modest "
                "power (uncorrected here; both questions' tests together are adjusted at the end of the page) "
                "and its size is uncertain."
            )
        elif significant:
            parts.append(f"{power}, and the observed |rho| exceeds it.")
        else:
            parts.append(
                f"{power}; a weaker true trend would usually be missed, so this result does not show "
                f"that N is independent of the {what}."
            )
    overall = art["agreement"]["all runs"]
    for name, label in (
        ("n_from_classes", "the N of the summed per-class fits"),
        ("class_clusters", "the number of groups of classes learned at distinct times"),
    ):
        a = overall[name]
        if a["share_equal"] is None:
            continue
        tested = f"rank correlation {a['rho']:+.2f} (p {fmt_p(a['p'])})" if a["rho"] is not None else a["note"]
        parts.append(
            f"{label[0].upper() + label[1:]} equals the observed N in {a['share_equal']:.0%} of "
            f"{a['n']} runs; {tested}."
        )
    parts.append(
        "These are synthetic faces at 32x32, one learning rate (1e-4) and one optimiser (Adam); "
        "they do not show how N behaves on Yale B, at 128x128 or under other optimisers."
    )
    return " ".join(parts)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error at the nominal level).

    Written out because it is four lines and none of dsc's dependencies has it (statsmodels'
    ``multipletests(method="holm")`` computes the same).
    """
    ordered = sorted(p_values, key=p_values.__getitem__)
    adjusted, running = {}, 0.0
    for i, name in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - i) * p_values[name]))
        adjusted[name] = running
    return adjusted


def primary_lines(primary: dict[str, dict]) -> list[str]:
    """The two questions' tests of N, Holm-adjusted as one family."""
    tested = {q: t for q, t in primary.items() if t is not None and t["rho"] is not None and math.isfinite(t["p"])}
    if len(tested) < 2:
        return []
    adjusted = holm({q: t["p"] for q, t in tested.items()})
    lines = [
        "## The two questions together",
        "",
        "Each question's test of N is one of a family of two; Holm's adjustment keeps the chance of "
        "any false trend at 5% across both:",
        "",
        "| question | runs | Spearman rho | p | Holm-adjusted p | at 5% |",
        "|---|---|---|---|---|---|",
    ]
    for q, t in tested.items():
        verdict = "a trend" if adjusted[q] < ALPHA else "no detectable trend"
        lines.append(f"| {q} | {t['n']} | {t['rho']:+.2f} | {fmt_p(t['p'])} | {fmt_p(adjusted[q])} | {verdict} |")
    return [*lines, ""]


def finished_runs(experiment: str) -> list:
    """The experiment's finished training runs (none where the experiment is absent)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`dsc.kind` = 'train' and attributes.status = 'FINISHED'")


def learned_only(experiment: str, param: str) -> str:
    """The trend of N over the runs that learned: final ``acc/val`` more than 5 points above chance.

    A run still at chance when its budget ends never left the latent phase; its N (0, or 1 for
    a fit to noise) says nothing about how many processes learning takes, and such runs pull
    the trend test towards the seeds that never learned. The sentence says how many there are
    and gives the test without them.
    """
    from scipy.stats import spearmanr

    rows = [
        (float(r.data.params[param]), r.data.metrics["lld/n_components"], r.data.metrics["acc/val"], r)
        for r in finished_runs(experiment)
        if param in r.data.params and {"lld/n_components", "acc/val"} <= set(r.data.metrics)
    ]
    learned = [row[2] > 1 / int(row[3].data.params["identities"]) + 0.05 for row in rows]
    stuck = [row for row, ok in zip(rows, learned) if not ok]
    if not stuck:
        return "Every run ends more than 5 points above chance accuracy."
    seeds = sorted({r.data.params["seed"] for *_, r in stuck}, key=int)
    kept = [(g, n) for (g, n, _, _), ok in zip(rows, learned) if ok]
    rho, p = spearmanr([g for g, _ in kept], [n for _, n in kept])
    return (
        f"{len(stuck)} of {len(rows)} runs end within 5 points of chance accuracy (seeds {', '.join(seeds)}; "
        f"{sum(1 for row in stuck if row[1] < 1)} of them with N = 0): they never left the latent phase "
        f"within the budget. Over the {len(kept)} runs that learned, Spearman rho of N against {param} is "
        f"{rho:+.2f} (p {fmt_p(p)}; smallest detectable at 80% power {detectable_rho(len(kept)):.2f})."
    )


def break_ranks(experiment: str) -> int:
    """Log the break ranks onto the experiment's finished training runs that lack them; how many runs have them."""
    runs = finished_runs(experiment)
    return len(log_break_ranks([r.info.run_id for r in runs])) if runs else 0


def figures(run_id: str, experiment: str, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in FIGURES:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"groups/{name}.png")
        target = out / f"results_{experiment}_{name}.png"
        shutil.copyfile(local, target)
        lines.append(f"![{experiment}: {name.replace('_', ' ')}](figures/{target.name})")
    return lines


def wall_time(experiment: str) -> tuple[int, float, float]:
    """Finished runs, their summed durations and the span from the first start to the last end (s)."""
    runs = finished_runs(experiment)
    if not runs:
        return 0, 0.0, 0.0
    total = sum((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    return len(runs), total, span


def what_ran(experiment: str, param: str) -> tuple[str, list[int]]:
    """The seeds, settings and grid points that ran, against the plan; the plan's seeds not run."""
    runs = finished_runs(experiment)
    seeds = sorted({r.data.params.get("seed", "?") for r in runs}, key=lambda s: (len(s), s))
    steps = sorted({r.data.params.get("steps", "0") for r in runs})
    epochs = sorted({r.data.params.get("epochs", "?") for r in runs})
    budget = f"`--steps {', '.join(steps)}`" if steps != ["0"] else f"{', '.join(epochs)} epochs"
    points = {r.data.params.get(param, "?") for r in runs}
    missing = [v for v in PLAN[experiment] if v not in points]
    line = f"Seeds {', '.join(seeds)} of the plan's {PLANNED_SEEDS} ({len(runs)} finished runs, {budget})."
    if missing:
        line += f" Not run: {param} = {', '.join(missing)}."
    if len(seeds) < PLANNED_SEEDS or missing:
        line += (
            " The plan did not fit the time the experiment had on 2 CPU cores shared with other "
            "work; the commands at the end of the page finish it."
        )
    return line, [s for s in range(PLANNED_SEEDS) if str(s) not in seeds]


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=DOCS, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="results-store", help="folder holding mlflow.db (docs/experiment.sh's STORE)")
    ap.add_argument("--out", default=str(DOCS / "results.md"))
    args = ap.parse_args()
    store = Path(args.store).resolve()
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    wall_file = store / "wall_times.txt"
    page = [
        "# What sets the number of learning processes",
        "",
        "Generated by `uv run python docs/results.py --store results-store` from the runs that "
        "`docs/experiment.sh` trained (synthetic faces at `--image-size 32`, lr 1e-4, batch 32, Adam, "
        "no snapshots; class count: 2-10 identities, 30 epochs; "
        "density: 5 identities, the same number of optimizer steps (`--steps`) for every density). "
        f"Commit {commit()}, machine: "
        f"{platform.machine()}, {platform.python_version()}, 2 CPU cores shared with other work "
        "(`--parallel 2`).",
        "",
        "Every interval is a t-based 95% interval of the group mean over seeds "
        "(mean +- t(0.975, n-1) sd / sqrt(n)); trend tests are Spearman's rho over runs against the "
        "grouping param; the detectable rho is the smallest |rho| a two-sided 5% test over that many "
        "runs finds with 80% power (Fisher z with Spearman's 1.06 factor, `dsc.core.power`). "
        "`lld/n_from_classes` is the BIC-chosen N of the summed per-class fitted curves with the run's "
        "own residual noise; `lld/class_clusters` the number of groups of classes whose "
        "`prob_class` main rises lie within 2 widths of each other (`dsc compare --cluster-factor`).",
        "",
    ]
    todo: dict[str, list[int]] = {}  # per question, the plan's seeds not yet run
    primary: dict[str, dict] = {}  # per question, the trend test of N
    for experiment, param, question, what in QUESTIONS:
        page += [f"## {question}", ""]
        if experiment == "classes":
            ranked = break_ranks(experiment)
            print(f"break ranks of {ranked} runs")
        cid = compare(experiment, param)
        if cid is None:
            page += [f"Not run: the store has no finished training run in experiment {experiment!r}.", ""]
            todo[experiment] = list(range(PLANNED_SEEDS))
            continue
        art = artifacts(cid)
        lines, trends = table(art, param)
        primary[what] = trends.get("n_components")
        n, total, span = wall_time(experiment)
        ran, todo[experiment] = what_ran(experiment, param)
        page += [
            f"{ran} Training took {total / 60:.0f} min of run time, "
            f"{span / 60:.0f} min of wall time (comparison run `{cid}`).",
            "",
        ]
        page += [
            *lines,
            "",
            f"Smallest Spearman rho detectable at 80% power with {n} runs: {detectable_rho(n):.2f}.",
            "",
            "Agreement of the two predictors with the observed N:",
            "",
        ]
        page += [*agreement_lines(art), ""]
        columns = break_rank_columns(art)
        if columns:
            ranks, rank_trends = table(art, param, columns)
            page += [
                "Li & Huang's break rank (`modes/<layer>/break_rank`: the k where the two power-law "
                "segments of each layer's error against its k leading singular modes join, from the "
                "final checkpoint, `dsc.jobs.break_ranks`; a layer whose two-segment fit failed has none, "
                "so a cell can rest on fewer runs than its row, and then says how many):",
                "",
                *ranks,
                "",
            ]
            trends = {**trends, **rank_trends}
        page += ["**Conclusion.** " + conclusion(trends, art, what, n) + " " + learned_only(experiment, param)]
        if columns:
            page[-1] += " " + break_rank_sentence(art, trends)
        page += [""]
        page += [*figures(cid, experiment, DOCS / "figures"), ""]
    page += primary_lines(primary)
    if wall_file.exists():
        page += ["## Wall time of the experiment", "", "```", wall_file.read_text().strip(), "```", ""]
    page += ["## The full plan", "", f"{PLANNED_SEEDS} seeds at every point:", "", "```bash"]
    page += ["STORE=results-store docs/experiment.sh", "uv run python docs/results.py --store results-store", "```", ""]
    todo = {q: seeds for q, seeds in todo.items() if seeds}
    if todo:
        page += ["To finish it on the store this page was made from (the seeds already run are left out):", ""]
        page += ["```bash"]
        page += [
            f'STORE=results-store QUESTIONS={q} SEEDS="{" ".join(map(str, s))}" docs/experiment.sh'
            for q, s in todo.items()
        ]
        page += ["uv run python docs/results.py --store results-store", "```", ""]
    Path(args.out).write_text("\n".join(page))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
