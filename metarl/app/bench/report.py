"""`metarl bench report`: build benchmarks/results/README.md (and one aggregate JSON + figures per
benchmark) from the per-seed result files that `metarl bench run` writes. The aggregate is
metarl.app.bench.result.Aggregate (`Aggregate.from_json` reads and validates one).

    metarl bench report [--results benchmarks/results]

A benchmark row is a result name with its seed suffix removed: `ml10_maml_trpo_s1.json`,
`ml10_maml_trpo_s2.json`, ... make the row `ml10_maml_trpo` and its aggregate
`ml10_maml_trpo.json`. A single-seed result without a suffix (`ml1_reach_maml_trpo.json`, written
by `metarl bench run`) is its own row. Per seed it reads:

- `<name>.eval_metaworld.json`: the final Meta-World-protocol evaluation on the held-out goals
  (`metarl eval RUN_DIR --protocol metaworld`, or the run's own with eval.protocol: metaworld):
  `success` counts per goal, then class, then mean over classes; `success_metaworld_pooled` is
  what metaworld 3.1.1's `metalearning_evaluation` computes from the same episodes;
- `<name>.eval_metaworld_train.json` (optional): the same on training goals;
- `<name>.eval.csv`: the periodic evaluations (`eval` rows: held-out goals, `eval_train` rows:
  training goals); success after adaptation = round 1. "max" = the best of these and the final
  evaluation, as the Meta-World paper's "average maximum success" (max over training, then mean
  over seeds).
- `<name>.eval_metaworld_2steps.json` (optional): the same checkpoint under the same protocol with
  `--adaptation-steps 2` ("after 2 rounds" in the ML1 variants section);
- `<name>.eval_metaworld_restart.json` (optional; `<name>.eval_metaworld_train_restart.json` for
  meta-train): the same checkpoint with `--evaluation-state restart`, each evaluation episode
  started from the agent's state after adaptation (RL²'s hidden state after the adaptation
  episodes, as metaworld-algorithms and garage evaluate RL²) instead of the trial going on. It
  makes a second row, `<row>_restart`, labelled with that semantics, next to the row it shares
  checkpoints with; its *max* is empty (the periodic evaluations in `eval.csv` ran the other
  semantics). A result file without `evaluation_state` ran "continue";
- `<name>.eval_metaworld_ctx_all.json` / `<name>.eval_metaworld_ctx_train_size.json` (optional, PEARL;
  `..._train_ctx_<v>.json` for meta-train): the same checkpoint with `--pearl-context all` or
  `train_size` (the posterior after adaptation from every context transition, or from
  `agent.embedding_batch_size` of them, the size training used), the setting the run's own file
  did not use. It makes a second row, `<row>_ctx_<v>`, as the restart files do; a PEARL file
  without `pearl_context` used "all";
- `<name>.progress.csv` (optional): `time/update_s` and the training batches' success, per iteration
  (ML1 variants section).
Intervals are 95% Student-t intervals over seeds (none for one seed).

The section "ML1 reach-v3: MAML variants and Reptile" compares the rows in VARIANT_ROWS with the
first (MAML-TRPO); `ml1_reach_variants.notes.md`, if present, is appended to it verbatim.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from metarl.agents import AGENTS
from metarl.app.bench.result import (Aggregate, AggregateSeed, AggregateSplit, HistoryPoint, MetaworldSummary,
                                     ProtocolSettings, Result, ResultFileError)
from metarl.core.types import ConfigError

__all__ = ["build", "load_seed", "aggregate", "agent_label", "display_name", "variants_section", "markdown",
           "SeedFigures", "SplitFigures", "VariantSeed", "PUBLISHED", "VARIANT_ROWS"]

# Published ML10 rows (success rates, %). Meta-World paper (Yu et al., CoRL 2019; arXiv v2) Table 1:
# average maximum success over training, meta-train / meta-test. Meta-World+ (v3 envs, 20M env
# steps): meta-test success read from the paper's figures, approximate.
PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "ML10": [
        {"source": "Meta-World paper v2, Table 1", "agent": "maml_trpo", "meta_train": 44.4, "meta_test": 31.6},
        {"source": "Meta-World paper v2, Table 1", "agent": "rl2_ppo", "meta_train": 86.9, "meta_test": 35.8},
        {"source": "Meta-World paper v2, Table 1", "agent": "pearl", "meta_train": 23.2, "meta_test": 13.0},
        {"source": "Meta-World+ (v3 envs, 20M steps; read from its figures)", "agent": "maml_trpo",
         "meta_train": None, "meta_test": 35.0, "approx": True},
        {"source": "Meta-World+ (v3 envs, 20M steps; read from its figures)", "agent": "rl2_ppo",
         "meta_train": None, "meta_test": 35.0, "approx": True},
    ],
}
# The "ML1 reach-v3: MAML variants and Reptile" comparison: result rows in table order (the first is the
# baseline the others are measured against); a row is shown when its `<row>_sN.json` and
# `<row>_sN.eval_metaworld.json` are here, the section when the baseline and one other row are.
VARIANT_ROWS = ["ml1_reach_maml_trpo", "ml1_reach_maml_fo", "ml1_reach_meta_sgd", "ml1_reach_reptile"]
VARIANT_NOTES = "ml1_reach_variants.notes.md"  # optional hand-written reading of the curves, appended
SPEED_THRESHOLD = 0.9
LAST_ITERS = 10  # iterations averaged for θ's training-batch success in the shortfall notes
_SEED = re.compile(r"^(?P<row>.+)_s(?P<seed>\d+)$")


def display_name(agent: str) -> str:
    """The agent's name in tables (its class's DISPLAY_NAME; an agent this code does not know: as written)."""
    cls = AGENTS.get(agent)
    return (cls.DISPLAY_NAME or agent) if cls is not None else agent


def agent_label(result: Result) -> str:
    """The row label the agent gives a run with this config (metarl.agents.base.MetaAgent.label)."""
    cls = AGENTS.get(result.agent)
    return cls.label(result.agent_fields) if cls is not None else result.agent


def _posterior_context(agent: str) -> bool:
    cls = AGENTS.get(agent)
    return cls is not None and cls.POSTERIOR_CONTEXT


def _rollouts_are_theta(agent: str) -> bool:
    cls = AGENTS.get(agent)
    return cls is not None and cls.ROLLOUTS_ARE_THETA


def t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for n - 1 degrees of freedom."""
    from scipy import stats
    return float(stats.t.ppf(0.975, n - 1))


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(t95(len(v)) * v.std(ddof=1) / math.sqrt(len(v)))


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _number(row: dict[str, str], key: str, path: Path, kind: type[int] | type[float]) -> float:
    """A CSV cell as a number, or one line naming the file and the column."""
    try:
        value = kind(row[key])
    except (KeyError, TypeError, ValueError):
        raise ResultFileError(f"{path}: {key}: must be a number in every row, got {row.get(key)!r}") from None
    if not math.isfinite(value):
        raise ResultFileError(f"{path}: {key}: must be finite, got {row.get(key)!r}")
    return value


def _by_round(eval_csv: Path, tag: str, round_: int) -> list[tuple[int, float]]:
    """(env steps, mean success) of each periodic evaluation with `tag` at round `round_`: mean over
    goals of each class, then over classes."""
    _, rows = _read_csv(eval_csv)
    by_step: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        if r.get("eval", "eval") != tag or int(_number(r, "round", eval_csv, int)) != round_:
            continue
        by_step.setdefault(int(_number(r, "env_steps", eval_csv, int)), {}).setdefault(
            r.get("task", ""), []).append(_number(r, "success", eval_csv, float))
    return [(s, float(np.mean([np.mean(v) for v in by_step[s].values()]))) for s in sorted(by_step)]


def periodic(eval_csv: Path, tag: str) -> list[tuple[int, float]]:
    """(env steps, mean success after adaptation) of each periodic evaluation with `tag`:
    round 1, mean over goals of each class, then over classes."""
    return _by_round(eval_csv, tag, 1)


def periodic_pre(eval_csv: Path, tag: str = "eval") -> list[tuple[int, float]]:
    """As `periodic`, round 0 (the episodes before adaptation)."""
    return _by_round(eval_csv, tag, 0)


def pearl_context(res: Result, mw: MetaworldSummary) -> str | None:
    """What an evaluation's posterior came from (eval.pearl_context), for agents it applies to
    (POSTERIOR_CONTEXT); files written before the setting existed used "all". None for other agents."""
    return (mw.pearl_context or "all") if _posterior_context(res.agent) else None


@dataclass(frozen=True)
class SplitFigures:
    """One seed's figures on the held-out ("test") or the training goals."""

    final: float | None
    pooled: float | None
    max: float | None
    history: list[tuple[int, float]]
    per_class: dict[str, float]
    pre_adaptation: float | None = None
    per_class_pre: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedFigures:
    """One seed of a row: its result file and Meta-World-protocol evaluations."""

    name: str
    seed: int | None
    result: Result
    metaworld: MetaworldSummary
    metaworld_train: MetaworldSummary | None
    evaluation_state: str
    pearl_context: str | None
    context_file: bool  # from `<name>.eval_metaworld_ctx_<v>.json`
    periodic_protocol: str | None  # None: a second evaluation of the same checkpoint (no periodic ones)
    test: SplitFigures
    train: SplitFigures

    @property
    def env_steps(self) -> int:
        return self.result.env_steps

    @property
    def wall_seconds(self) -> float:
        return self.result.wall_seconds

    @property
    def stopped_early(self) -> bool:
        return self.result.stopped_early

    def split(self, key: str) -> SplitFigures:
        return self.test if key == "test" else self.train


def _protocol_file(path: Path) -> MetaworldSummary | None:
    return MetaworldSummary.from_json(path) if path.is_file() else None


def load_seed(results: Path, name: str, restart_file: bool = False, context_file: str | None = None
              ) -> SeedFigures | None:
    """One seed's figures, or None when it has no Meta-World-protocol evaluation yet. With
    `restart_file`: from `<name>.eval_metaworld_restart.json` (and `..._train_restart.json`), which
    must record evaluation_state "restart"; with `context_file` v (PEARL): from
    `<name>.eval_metaworld_ctx_<v>.json` (and `..._train_ctx_<v>.json`), which must record
    pearl_context v. The periodic evaluations are then left out (they ran the run's own setting).
    A file that is not what the workflow writes: ResultFileError naming it."""
    res = Result.from_json(results / f"{name}.json")
    suffix = "_restart" if restart_file else (f"_ctx_{context_file}" if context_file else "")
    mw_path = results / f"{name}.eval_metaworld{suffix}.json"
    mw = _protocol_file(mw_path)
    if mw is None:
        return None
    train_path = results / f"{name}.eval_metaworld_train{suffix}.json"
    mw_train = _protocol_file(train_path)
    if restart_file:
        for path, d in ((mw_path, mw), (train_path, mw_train)):
            if d is not None and d.evaluation_state != "restart":
                raise ResultFileError(f"{path}: evaluation_state {d.evaluation_state!r}, expected 'restart'")
    elif mw_train is not None and mw_train.evaluation_state != mw.evaluation_state:
        raise ResultFileError(f"{train_path}: evaluation_state {mw_train.evaluation_state!r}, but "
                              f"{mw_path.name} has {mw.evaluation_state!r}")
    if context_file:
        for path, d in ((mw_path, mw), (train_path, mw_train)):
            if d is not None and pearl_context(res, d) != context_file:
                raise ResultFileError(f"{path}: pearl_context {pearl_context(res, d)!r}, expected {context_file!r}")
    elif mw_train is not None and pearl_context(res, mw_train) != pearl_context(res, mw):
        raise ResultFileError(f"{train_path}: pearl_context {pearl_context(res, mw_train)!r}, but "
                              f"{mw_path.name} has {pearl_context(res, mw)!r}")
    second = restart_file or bool(context_file)  # below: a second evaluation of the same checkpoint
    test_hist = [] if second else periodic(results / f"{name}.eval.csv", "eval")
    train_hist = [] if second else periodic(results / f"{name}.eval.csv", "eval_train")
    train_final = mw_train.success if mw_train else (train_hist[-1][1] if train_hist else None)
    return SeedFigures(
        name=name, seed=res.seeds[0] if len(res.seeds) == 1 else None, result=res, metaworld=mw,
        metaworld_train=mw_train, evaluation_state=mw.evaluation_state, pearl_context=pearl_context(res, mw),
        context_file=bool(context_file), periodic_protocol=None if second else res.eval_protocol,
        test=SplitFigures(final=mw.success, pooled=mw.success_metaworld_pooled,
                          max=None if second else max([mw.success] + [s for _, s in test_hist]),
                          history=test_hist, pre_adaptation=mw.success_pre_adaptation,
                          per_class={k: v.success for k, v in mw.per_class.items()},
                          per_class_pre={k: v.success_pre_adaptation for k, v in mw.per_class.items()}),
        train=SplitFigures(final=train_final, pooled=mw_train.success_metaworld_pooled if mw_train else None,
                           max=None if second else
                           max([x for x in [train_final] + [s for _, s in train_hist] if x is not None], default=None),
                           history=train_hist,
                           per_class={k: v.success for k, v in mw_train.per_class.items()} if mw_train else {}))


def aggregate(row: str, seeds: list[SeedFigures]) -> Aggregate:
    """A row's aggregate over its seeds (written as `<row>.json`)."""
    first = seeds[0].result

    def split(key: str) -> AggregateSplit:
        figs = [s.split(key) for s in seeds]
        finals = [f.final for f in figs if f.final is not None]
        maxes = [f.max for f in figs if f.max is not None]
        pooled = [f.pooled for f in figs if f.pooled is not None]
        if not finals:
            return AggregateSplit.empty()
        f_mean, f_ci = mean_ci(finals)
        m_mean, m_ci = mean_ci(maxes) if maxes else (None, None)
        classes = list(figs[0].per_class)
        pre_mean = None
        if key == "test":  # every seed's test figures carry it (MetaworldSummary always has one)
            pre = [f.pre_adaptation for f in figs]
            assert None not in pre, f"{row}: a seed's held-out figures lack success_pre_adaptation"
            pre_mean = float(np.mean(cast("list[float]", pre)))
        return AggregateSplit(
            success_final=f_mean, success_final_ci95=f_ci, success_max=m_mean, success_max_ci95=m_ci,
            success_metaworld_pooled=float(np.mean(pooled)) if pooled else None,
            success_pre_adaptation=pre_mean,
            per_seed=tuple(AggregateSeed(seed=s.seed, success_final=f.final, success_max=f.max,
                                         success_metaworld_pooled=f.pooled,
                                         history=tuple(HistoryPoint(env_steps=e, success=v) for e, v in f.history))
                           for s, f in zip(seeds, figs)),
            per_class={c: float(np.mean([f.per_class.get(c, np.nan) for f in figs])) for c in classes})

    return Aggregate(
        preset=first.preset, agent=first.agent, benchmark=first.benchmark,
        env_name=first.env_name, horizon=seeds[0].metaworld.horizon, protocol="metaworld",
        # evaluation_state and pearl_context as the first seed's file has them (absent: not listed)
        protocol_settings=ProtocolSettings.of(seeds[0].metaworld),
        seeds=tuple(s.seed for s in seeds), env_steps=tuple(s.env_steps for s in seeds),
        budget_env_steps=first.config_env_steps, stopped_early=tuple(s.stopped_early for s in seeds),
        wall_seconds=tuple(s.wall_seconds for s in seeds), machine=tuple(sorted({s.result.machine for s in seeds})),
        command=tuple(s.result.command for s in seeds), git_commit=tuple(s.result.git_commit for s in seeds),
        meta_test=split("test"), meta_train=split("train"), result_files=tuple(s.name for s in seeds),
        periodic_protocol=tuple(s.periodic_protocol for s in seeds))


@dataclass(frozen=True)
class VariantSeed:
    """One seed's figures for the ML1 variants table."""

    name: str
    label: str
    env_steps: int
    wall_seconds: float
    iterations: int
    steps_per_iteration: float | None
    pre: float
    after1: float
    pooled: float
    after2: float | None
    phases_2steps: dict[str, float]
    update_s_mean: float | None
    update_s_median: float | None
    test_history: list[tuple[int, float]]
    test_history_pre: list[tuple[int, float]]
    first_test: int | None
    train_post: list[tuple[int, float]]
    train_pre: list[tuple[int, float]]
    first_train: int | None


def first_at(history: list[tuple[int, float]], threshold: float = SPEED_THRESHOLD) -> int | None:
    """Env steps of the first point of `history` at or above `threshold`; None if none is."""
    return next((e for e, v in history if v >= threshold), None)


def variant_seed(results: Path, name: str) -> VariantSeed | None:
    """One seed's figures for the variants table, or None without its result / protocol files.
    `<name>.eval_metaworld.json` must be the 1-step protocol (before / after 1 round, pooled),
    `<name>.eval_metaworld_2steps.json` (optional) the same checkpoint with --adaptation-steps 2."""
    res_path, mw_path = results / f"{name}.json", results / f"{name}.eval_metaworld.json"
    if not (res_path.is_file() and mw_path.is_file()):
        return None
    res, mw = Result.from_json(res_path), MetaworldSummary.from_json(mw_path)
    if mw.adaptation_steps != 1:
        raise ResultFileError(f"{mw_path}: adaptation_steps {mw.adaptation_steps}, expected 1")
    two_path = results / f"{name}.eval_metaworld_2steps.json"
    two = _protocol_file(two_path)
    if two is not None and two.adaptation_steps != 2:
        raise ResultFileError(f"{two_path}: adaptation_steps {two.adaptation_steps}, expected 2")
    prog_path = results / f"{name}.progress.csv"
    header, prog = _read_csv(prog_path)
    update_s = [_number(r, "time/update_s", prog_path, float) for r in prog if r.get("time/update_s") not in (None, "")]

    def column(key: str) -> list[tuple[int, float]]:
        return [(int(_number(r, "env_steps", prog_path, int)), _number(r, key, prog_path, float)) for r in prog]

    # training batches: post-adaptation success where the progress log has both (MAML: success_rate
    # after the inner step, success_rate_pre before); agents that only roll out θ have no such column
    post_train = column("rollout/success_rate") if {"rollout/success_rate", "rollout/success_rate_pre"} <= set(header) \
        else []
    if "rollout/success_rate_pre" in header:
        pre_train = column("rollout/success_rate_pre")
    elif _rollouts_are_theta(res.agent) and "rollout/success_rate" in header:
        pre_train = column("rollout/success_rate")
    else:
        pre_train = []
    test_hist = periodic(results / f"{name}.eval.csv", "eval")
    return VariantSeed(
        name=name, label=agent_label(res), env_steps=res.env_steps, wall_seconds=res.wall_seconds,
        iterations=len(prog), steps_per_iteration=res.env_steps / len(prog) if prog else None,
        pre=mw.success_pre_adaptation, after1=mw.success, pooled=mw.success_metaworld_pooled,
        after2=two.success if two else None,
        phases_2steps=phase_success(results / f"{name}.eval_metaworld_2steps.csv"),
        update_s_mean=float(np.mean(update_s)) if update_s else None,
        update_s_median=float(np.median(update_s)) if update_s else None,
        test_history=test_hist, test_history_pre=periodic_pre(results / f"{name}.eval.csv"),
        first_test=first_at(test_hist), train_post=post_train, train_pre=pre_train, first_train=first_at(post_train))


def phase_success(protocol_csv: Path) -> dict[str, float]:
    """Success by phase of a Meta-World-protocol episode CSV (`adapt0`: before adaptation, `adaptN`:
    after N steps, `eval`: the evaluation episodes): mean per goal, then per class, then over classes."""
    _, rows = _read_csv(protocol_csv)
    by: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        by.setdefault(r.get("phase", ""), {}).setdefault(r.get("task", ""), {}).setdefault(
            r.get("task_index", ""), []).append(_number(r, "success", protocol_csv, float))
    return {ph: float(np.mean([np.mean([np.mean(g) for g in goals.values()]) for goals in classes.values()]))
            for ph, classes in by.items()}


def _mean(vals: list[float | None] | list[float] | list[int | None]) -> float | None:
    kept = [v for v in vals if v is not None]
    return float(np.mean(kept)) if kept else None


def _points(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{100 * (a - b):+.1f} points"


def _msteps(e: float | None) -> str:
    return "–" if e is None else f"{e / 1e6:.1f}M"


def variants_plot(results: Path, table: dict[str, list[VariantSeed]]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax, ax2 = fig.subplots(1, 2)
    for i, (row, seeds) in enumerate(table.items()):
        color = f"C{i}"
        for j, s in enumerate(seeds):
            lab = s.label if j == 0 else None
            h, hp = s.test_history, s.test_history_pre
            if h:
                ax.plot([e / 1e6 for e, _ in h], [100 * v for _, v in h], marker="o", color=color, label=lab)
            if hp:
                ax.plot([e / 1e6 for e, _ in hp], [100 * v for _, v in hp], marker=".", ls="--", color=color,
                        alpha=0.6)
            if s.train_post:
                ax2.plot([e / 1e6 for e, _ in s.train_post], [100 * v for _, v in s.train_post],
                         color=color, label=lab)
            if s.train_pre:
                ax2.plot([e / 1e6 for e, _ in s.train_pre], [100 * v for _, v in s.train_pre],
                         color=color, ls="--", alpha=0.6, label=None if s.train_post else lab)
    ax.set(title="periodic meta-test evaluations (held-out goals)\nsolid: after adaptation, dashed: before",
           xlabel="env steps (M)", ylabel="success (%)", ylim=(-2, 102))
    ax2.set(title="training batches (every iteration)\nsolid: after the inner step(s), dashed: θ's episodes",
            xlabel="env steps (M)", ylabel="success (%)", ylim=(-2, 102))
    for a in (ax, ax2):
        a.axhline(100 * SPEED_THRESHOLD, color="grey", lw=0.8, ls=":")
        a.set_xlim(left=0)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle("ML1 reach-v3 (horizon 500): MAML variants and Reptile")
    fig.tight_layout()
    out = "ml1_reach_variants.png"
    fig.savefig(results / out, dpi=100)
    return out
def variants_section(results: Path, seed_names: dict[str, list[str]]) -> str:
    """The "ML1 reach-v3: MAML variants and Reptile" section ("" when the baseline row or every
    other row is missing). `seed_names`: row -> its per-seed result names."""
    table: dict[str, list[VariantSeed]] = {}
    for row in VARIANT_ROWS:
        seeds = [s for s in (variant_seed(results, n) for n in seed_names.get(row, [])) if s is not None]
        if seeds:
            table[row] = seeds
    if VARIANT_ROWS[0] not in table or len(table) < 2:
        return ""
    fig = variants_plot(results, table)
    thr = f"{100 * SPEED_THRESHOLD:.0f}%"
    lines = ["## ML1 reach-v3: MAML variants and Reptile", "",
             "Same task (reach-v3, 50 held-out goals, horizon 500), budget (5M env steps), batch (20 tasks x 10 "
             "episodes), network and evaluation for every row. *before / after 1 / pooled*: the run's final "
             "Meta-World-protocol evaluation of its last policy (`<name>.eval_metaworld.json`); *after 2*: the same "
             "checkpoint with `metarl eval CKPT --protocol metaworld --adaptation-steps 2` "
             "(`<name>.eval_metaworld_2steps.json`: 10 sampled episodes, an adaptation step, 10 more, a second "
             "step, then the 3 evaluation episodes). An adaptation step is one inner policy-gradient step for the "
             "MAML variants and Reptile's k = `agent.inner_steps` inner steps on the same episodes. "
             f"*meta-test ≥ {thr} first at*: the first periodic evaluation (`eval` rows of `<name>.eval.csv`, "
             "held-out goals, after adaptation) at or above it, out of the evaluations listed (their spacing is "
             "`eval.every` iterations); *training ≥ " + thr + " first at*: the same on the training batches' "
             "post-adaptation success in `<name>.progress.csv`, logged every iteration (– where the agent logs only "
             "episodes of θ). *update s/iteration*: mean (median) of `time/update_s` over iterations; wall time and "
             "update times come from a shared 2-core machine with other jobs running, so they are rough.", "",
             "| algorithm | seeds | env steps | iterations (env steps each) | before adaptation | after 1 round "
             "| after 2 rounds | pooled (metaworld 3.1.1) | meta-test ≥ " + thr + " first at (evaluated at) "
             "| training ≥ " + thr + " first at | wall time | update s/iteration |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary: dict[str, dict[str, Any]] = {}
    for row, seeds in table.items():
        firsts = [s.first_test for s in seeds]
        trains = [s.first_train for s in seeds]
        summary[row] = {"label": seeds[0].label, "after1": _mean([s.after1 for s in seeds]),
                        "after2": _mean([s.after2 for s in seeds]), "pre": _mean([s.pre for s in seeds]),
                        "first_test": None if None in firsts else _mean(firsts),
                        "first_train": None if None in trains or not seeds[0].train_post else _mean(trains),
                        "theta_last": _mean([_mean([v for _, v in s.train_pre[-LAST_ITERS:]]) for s in seeds])}
        grid = ", ".join(_msteps(e) for e, _ in seeds[0].test_history)
        spi = _mean([s.steps_per_iteration for s in seeds])
        upd = f"{_mean([s.update_s_mean for s in seeds]):.1f} ({_mean([s.update_s_median for s in seeds]):.1f})" \
            if seeds[0].update_s_mean is not None else "–"
        first_test = " / ".join(_msteps(f) if f is not None else "not reached" for f in firsts)
        first_train = " / ".join(_msteps(f) if f is not None else "not reached" for f in trains) \
            if seeds[0].train_post else "–"
        lines.append(
            f"| **{seeds[0].label}** (`{row}`) | {len(seeds)} | {', '.join(_msteps(s.env_steps) for s in seeds)} "
            f"| {', '.join(str(s.iterations) for s in seeds)} ({_msteps(spi)}) "
            f"| {pct(summary[row]['pre'])} | {pct(summary[row]['after1'])} | {pct(summary[row]['after2'])} "
            f"| {pct(_mean([s.pooled for s in seeds]))} | {first_test} ({grid}) | {first_train} "
            f"| {', '.join('%.0f min' % (s.wall_seconds / 60) for s in seeds)} | {upd} |")
    lines.append("")
    phased = [(seeds[0].label, s.phases_2steps) for seeds in table.values() for s in seeds if s.phases_2steps]
    if phased:
        lines.append("Episode success by phase of the 2-round evaluations (`<name>.eval_metaworld_2steps.csv`; "
                     "adaptation episodes do not end on success, evaluation episodes do; its JSON's "
                     "`success_pre_adaptation` is the *last* adaptation step's episodes, i.e. after 1 round): " +
                     "; ".join(f"{label} " + ", ".join(f"{ph} {pct(v)}" for ph, v in sorted(ph_s.items()))
                               for label, ph_s in phased) + ".")
        lines.append("")
    lines += [f"![{fig}]({fig})", ""]
    base = summary[VARIANT_ROWS[0]]
    for row, s in summary.items():
        if row == VARIANT_ROWS[0]:
            continue
        gaps = []
        for key, what in (("after1", "after 1 adaptation round"), ("after2", "after 2 rounds")):
            if s[key] is not None and base[key] is not None and s[key] < base[key]:
                gaps.append(f"{100 * (base[key] - s[key]):.1f} points of held-out success {what} "
                            f"({pct(s[key])} vs {pct(base[key])})")
        for key, where in (("first_test", "the periodic meta-test evaluations"),
                           ("first_train", "its training batches")):
            if base[key] is None:
                continue
            if s[key] is None and (key == "first_test" or table[row][0].train_post):
                gaps.append(f"{thr} never reached in {where} within its budget "
                            f"({base['label']}: at {_msteps(base[key])})")
            elif s[key] is not None and s[key] > base[key]:
                gaps.append(f"{_msteps(s[key] - base[key])} more env steps to reach {thr} in {where} "
                            f"({_msteps(s[key])} vs {_msteps(base[key])})")
        context = (f" Where it stands: adaptation gain (after 1 round minus before, final evaluation) "
                   f"{_points(s['after1'], s['pre'])} ({base['label']}: {_points(base['after1'], base['pre'])}); "
                   f"θ's own success on its training batches, mean of the last {LAST_ITERS} iterations, "
                   f"{pct(s['theta_last'])} ({base['label']}: {pct(base['theta_last'])}).") if gaps else ""
        lines.append(f"- **{s['label']}** vs {base['label']}: " +
                     ("falls short by " + "; ".join(gaps) + "." + context if gaps else
                      "no shortfall in final success or in learning speed at the resolution of these evaluations."))
    lines.append("")
    notes = results / VARIANT_NOTES
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    return "\n".join(lines)


def pct(x: float | None, ci: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%" + (f" ± {100 * ci:.1f}" if ci is not None else "")


def figures(results: Path, row: str, agg: Aggregate, seeds: list[SeedFigures]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out = []
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("train", "test"), ("meta-train goals", "meta-test (held-out) goals")):
        for s in seeds:
            h = s.split(key).history
            if h:
                ax.plot([e / 1e6 for e, _ in h], [100 * v for _, v in h], marker=".", alpha=0.6,
                        label=f"seed {s.seed}")
        lens = {len(s.split(key).history) for s in seeds}
        if len(seeds) > 1 and len(lens) == 1 and lens != {0}:
            steps = [e / 1e6 for e, _ in seeds[0].split(key).history]
            mean = np.mean([[v for _, v in s.split(key).history] for s in seeds], axis=0)
            ax.plot(steps, 100 * mean, color="k", lw=2, label="mean")
        ax.set(title=title, xlabel="env steps (M)", ylabel="success after adaptation (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{row}: periodic evaluations (success after adaptation, a fixed subsample of goals)")
    fig.tight_layout()
    fig.savefig(results / f"{row}.curves.png", dpi=100)
    out.append(f"{row}.curves.png")

    classes = list(agg.meta_test.per_class)
    fig = Figure(figsize=(max(6, 1.2 * len(classes) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(classes))
    pre = [np.mean([s.test.per_class_pre[c] for s in seeds]) for c in classes]
    post = [agg.meta_test.per_class[c] for c in classes]
    ax.bar(x - 0.2, 100 * np.asarray(pre), 0.4, label="adaptation episodes (before the adaptation step)")
    ax.bar(x + 0.2, 100 * np.asarray(post), 0.4, label="evaluation episodes (after)")
    ax.set_xticks(x, classes, rotation=20, fontsize=8)
    ax.set(ylabel="success (%)", ylim=(0, 102), title=f"{row}: held-out classes, final evaluation, mean over seeds")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(results / f"{row}.per_class.png", dpi=100)
    out.append(f"{row}.per_class.png")
    return out


def markdown(rows: dict[str, Aggregate], figs: dict[str, list[str]], others: list[str], extra: str = "",
             labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    lines = ["# Benchmark results", "",
             "Generated by `metarl bench report` from the per-seed result files in this folder; "
             "do not edit by hand.", "",
             "**How success is counted.** Every figure below comes from the Meta-World protocol "
             "(`metarl eval RUN_DIR --protocol metaworld`): per held-out goal, 10 adaptation episodes with "
             "sampled actions, one adaptation step (MAML: one inner step; RL²: the trial goes on; PEARL: "
             "posterior from that context), then 3 evaluation episodes that end on success; an episode succeeds "
             "if any step does; mean per goal, then per class, then over classes. *final* = the last policy on all "
             "goals of each held-out class; *max* = the best of the periodic evaluations (a fixed subsample of goals, "
             "the same for every seed) and the final one, as the Meta-World paper's \"average maximum success\". "
             "± = 95% Student-t interval over seeds. *pooled* = the number metaworld 3.1.1's own "
             "`metalearning_evaluation` computes from the very same episodes: it counts only the first 3 episodes "
             "to *finish* among the envs of a class, so early successes count and slow failures do not "
             "(tests/test_protocol.py reproduces it exactly); published v3 numbers were computed that way.", ""]
    for bench in sorted({r.benchmark for r in rows.values()}):
        lines += [f"## {bench}", ""]
        lines += ["| agent | seeds | env steps | meta-train final | meta-train max | meta-test final | meta-test max "
                  "| meta-test before adaptation | meta-test pooled (metaworld 3.1.1) | wall time per seed | machine |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row, a in sorted(rows.items()):
            if a.benchmark != bench:
                continue
            steps = ", ".join((f"{e / 1e6:.1f}M" if e >= 1e5 else f"{e:,}") + (" (stopped)" if st else "")
                              for e, st in zip(a.env_steps, a.stopped_early))
            mt, mtr = a.meta_test, a.meta_train
            label = labels.get(row, display_name(a.agent)) + (f" ({a.env_name})" if a.env_name else "")
            lines.append(
                f"| **{label}** (`{row}`) | {len(a.seeds)} | {steps} | {pct(mtr.success_final, mtr.success_final_ci95)} "
                f"| {pct(mtr.success_max, mtr.success_max_ci95)} | {pct(mt.success_final, mt.success_final_ci95)} "
                f"| {pct(mt.success_max, mt.success_max_ci95)} | {pct(mt.success_pre_adaptation)} "
                f"| {pct(mt.success_metaworld_pooled)} | {', '.join(f'{w / 3600:.1f} h' for w in a.wall_seconds)} "
                f"| {'; '.join(a.machine)} |")
        for p in PUBLISHED.get(bench, []):
            pub_mt = f"{'~' if p.get('approx') else ''}{p['meta_test']:.1f}%"
            pub_mtr = "–" if p["meta_train"] is None else f"{p['meta_train']:.1f}%"
            lines.append(f"| {display_name(p['agent'])} — *published: {p['source']}* | | | | {pub_mtr} | | {pub_mt} "
                         "| | | | |")
        lines.append("")
        if any(a.benchmark == bench and a.protocol_settings.evaluation_state == "restart"
               for a in rows.values()):
            lines += [RESTART_NOTE, ""]
        if any(a.benchmark == bench and row.endswith(tuple(f"_ctx_{v}" for v in CONTEXT_LABELS))
               for row, a in rows.items()):
            lines += [CONTEXT_NOTE, ""]
        for row, a in sorted(rows.items()):
            if a.benchmark == bench:
                if figs.get(row):
                    lines.append(f"`{row}`: " + " ".join(f"![{f}]({f})" for f in figs[row]))
                    lines.append("")
                curve_seeds = [str(sd) for sd, pp in zip(a.seeds, a.periodic_protocol)
                               if pp not in ("metaworld", None)]
                if curve_seeds:
                    lines.append(f"Seed(s) {', '.join(curve_seeds)} of `{row}` ran before `eval.protocol: metaworld` "
                                 "existed: their periodic evaluations (the *max* columns) used the curve protocol on the "
                                 "same goals (10 episodes, one adaptation step, 10 more episodes), which estimates the "
                                 "same success for MAML-TRPO; their *final* figures come from the Meta-World protocol.")
                    lines.append("")
                per_class = a.meta_test.per_class
                lines.append("Held-out classes (final, mean over seeds): " +
                             ", ".join(f"{c} {pct(v)}" for c, v in per_class.items()))
                lines.append("")
    if extra:
        lines += [extra, ""]
    if others:
        lines += ["## Other results in this folder", "",
                  "Earlier runs, not under the Meta-World protocol (150-step episodes or the curve protocol); "
                  "not comparable with published tables:", ""]
        lines += [f"- [{o}]({o}.md)" for o in others]
        lines.append("")
    return "\n".join(lines)


RESTART_LABEL = ", evaluation episodes restarted"
RESTART_NOTE = ("*evaluation episodes restarted*: each of the 3 evaluation episodes starts from the agent's "
                "state after the adaptation episodes (`--evaluation-state restart`; RL²: the hidden state after "
                "episode 10, as metaworld-algorithms and garage evaluate RL², so with mean actions the 3 episodes are "
                "the same); the other rows let the trial go on (RL²: episodes 11-13). A `<row>_restart` row beside a "
                "`<row>` row holds the same checkpoints evaluated that way (`<name>.eval_metaworld_restart.json`); its "
                "*max* is empty (the periodic evaluations ran the other way), its meta-train columns too unless "
                "`<name>.eval_metaworld_train_restart.json` exists.")


# PEARL's evaluation posterior (eval.pearl_context): the label of a row that used it ("all" only on a
# `_ctx_all` row: a PEARL row without a suffix in its label used all, as every PEARL run before the setting)
CONTEXT_LABELS: dict[str, str] = {"all": ", posterior from the whole context",
                  "train_size": ", posterior from a training-size context"}
CONTEXT_NOTE = ("*posterior from a training-size context* (PEARL, `eval.pearl_context: train_size` or "
                "`--pearl-context train_size`): after the 10 adaptation episodes, z is drawn from the posterior of "
                "`agent.embedding_batch_size` transitions drawn from them, the context size training used; *from the "
                "whole context*: of all 5,000. A `<row>_ctx_<v>` row beside a `<row>` row holds the same checkpoints "
                "evaluated the other way (`<name>.eval_metaworld_ctx_<v>.json`); its *max* is empty.")


def row_label(seed: SeedFigures) -> str:
    """A row's label: the agent's, and how its evaluation ran where that is not the default."""
    ctx = seed.pearl_context
    return agent_label(seed.result) + (RESTART_LABEL if seed.evaluation_state == "restart" else "") + \
        (CONTEXT_LABELS[ctx] if ctx is not None and ctx in CONTEXT_LABELS and (ctx != "all" or seed.context_file)
         else "")




def _is_seed_result(data: dict[str, Any]) -> bool:
    """A per-seed result (`metarl bench run`'s `<name>.json`), not an aggregate this report wrote nor
    another benchmark's output."""
    if "per_seed" not in data or "preset" not in data:
        return False
    meta_test = data.get("meta_test")
    return not (data.get("protocol") == "metaworld" and isinstance(meta_test, dict) and "success_final" in meta_test)


def build(results: Path) -> list[str]:
    """Rebuild `results`/README.md, the rows' aggregates (`<row>.json`) and figures from the
    per-seed result files there; the rows written. A file that is not what the workflow writes:
    ResultFileError (one line naming it)."""
    if not results.is_dir():
        raise ConfigError(f"--results: no such directory: {results}")
    groups: dict[str, list[SeedFigures]] = {}
    others = []
    for path in sorted(results.glob("*.json")):
        name = path.name[:-len(".json")]
        if "." in name:
            continue  # <name>.eval_metaworld.json and friends
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ResultFileError(f"{path}: not JSON ({e})") from None
        if not (isinstance(data, dict) and _is_seed_result(data)):
            continue
        seed = load_seed(results, name)
        restarted = load_seed(results, name, restart_file=True) \
            if seed is not None and seed.evaluation_state != "restart" else None
        other_ctx = None if seed is None or seed.pearl_context is None else \
            ("all" if seed.pearl_context == "train_size" else "train_size")
        other = load_seed(results, name, context_file=other_ctx) if other_ctx else None
        if seed is None:
            if (results / f"{name}.md").is_file():
                others.append(name)
            continue
        m = _SEED.match(name)
        base = m.group("row") if m else name
        for s in (seed, restarted, other):
            if s is not None:  # a row per evaluation semantics, so each row compares like with like
                groups.setdefault(base + ("_restart" if s.evaluation_state == "restart" else "")
                                  + (f"_ctx_{s.pearl_context}" if s.context_file else ""), []).append(s)
    rows: dict[str, Aggregate] = {}
    figs: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    for row, seeds in sorted(groups.items()):
        if len({s.pearl_context for s in seeds}) > 1:
            raise ResultFileError(f"row {row} mixes PEARL evaluations with pearl_context "
                                  f"{sorted({str(s.pearl_context) for s in seeds})} ({', '.join(s.name for s in seeds)}); "
                                  f"evaluate every seed the same way")
        labels[row] = row_label(seeds[0])
        seeds.sort(key=lambda s: (s.seed is None, s.seed or 0))
        agg = aggregate(row, seeds)
        rows[row] = agg
        # a row made of one unsuffixed result (`metarl bench run`'s own <name>.json) must not overwrite it
        target = results / (f"{row}.json" if seeds[0].name != row else f"{row}_all_seeds.json")
        target.write_text(agg.to_json())
        # a row from `--evaluation-state restart` files has no periodic evaluations of its own to plot
        figs[row] = figures(results, row, agg, seeds) if any(s.periodic_protocol for s in seeds) else []
    extras = []
    try:
        extras.append(variants_section(results, {row: [s.name for s in seeds] for row, seeds in groups.items()}))
    except ResultFileError as e:
        raise ResultFileError(f"ML1 variants section: {e}") from None
    scratch = results / "scratch_baseline.md"
    if scratch.is_file():
        extras.append("## From-scratch baseline\n\n" + scratch.read_text().split("\n", 1)[1].strip())
    extra = "\n\n".join(e for e in extras if e)
    (results / "README.md").write_text(markdown(rows, figs, others, extra, labels) + "\n")
    return list(rows)
