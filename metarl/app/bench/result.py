"""The result file of a benchmark run, `benchmarks/results/<name>.json`, as frozen dataclasses that
every writer and reader of the benchmark workflow shares (`metarl bench run | park | finish |
release | report`), the Meta-World-protocol summaries (`<name>.eval_metaworld*.json`) the
report reads beside it, and the aggregate over a row's seeds that the report writes
(`<row>.json` or `<row>_all_seeds.json`: `Aggregate`).

    result = Result.from_json(path)          # validated: types, sizes, finiteness
    path.write_text(result.to_json())        # the same layout, key for key

`from_json` refuses a file that does not hold what the writer writes with one line naming the
file and the field (`ResultFileError`, a `ConfigError`). Keys that older writers did not write
(a result from before `budget_env_steps`, `warm_restart` or `final_eval_stopped` existed) read as
their defaults, and `to_json` leaves them out again, so a committed file reads back and writes
back unchanged (`omitted`: the keys the file lacked). A result built by the writer writes every
key, except the optional ones that are documented as written only when set.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from metarl.core.types import ConfigError

__all__ = ["ResultFileError", "Segment", "ClassSuccess", "MetaworldSummary", "Selected", "MetaTest",
           "MetaTestSelected", "SeedResult", "Result", "ProtocolSettings", "HistoryPoint", "AggregateSeed",
           "AggregateSplit", "Aggregate", "read_json_object"]

R = TypeVar("R", bound="_Record")

_NAN_OK = "nan_ok"
# A number that may also be NaN (json writes it as NaN): an aggregate's mean over seeds of a class that
# some seed has no figure for.
FloatOrNaN = Annotated[float, _NAN_OK]


class ResultFileError(ConfigError):
    """A result file that does not hold what the benchmark workflow writes: one line naming the
    file and the field."""


def opt(default: Any, *, key: str | None = None, write_default: bool = True) -> Any:
    """A field whose key older files may lack (it then reads as `default`). A result built by the
    writer writes it, unless `write_default` is False and it holds `default`."""
    return field(default=default, metadata={"optional": True, "write_default": write_default,
                                            **({"key": key} if key else {})})


def renamed(key: str) -> Any:
    """A required field stored under another key (`return`, a Python keyword)."""
    return field(metadata={"key": key})


def _omitted() -> Any:
    return field(default=None, kw_only=True, compare=False, repr=False, metadata={"internal": True})


class _Invalid(Exception):
    """Raised by a record's `check`: (field path, what is wrong)."""

    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}")
        self.where, self.what = where, what


def _is_json(value: Any, where: str) -> None:
    """A JSON value with finite numbers (the `config` section is kept as written)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(where, f"must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Invalid(where, f"keys must be strings, got {k!r}")
            _is_json(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _is_json(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise _Invalid(where, f"must be a JSON value, got {type(value).__name__}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _decode(tp: Any, value: Any, where: str) -> Any:
    """`value` (as json.loads gave it) as type `tp`, or _Invalid naming `where`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        if _NAN_OK in args[1:] and isinstance(value, float) and math.isnan(value):
            return value
        return _decode(args[0], value, where)
    if tp is Any:
        _is_json(value, where)
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:  # X | None: X's own message names what is wrong inside it
            return _decode(rest[0], value, where)
        for a in rest:  # the first that fits (unions here never overlap)
            try:
                return _decode(a, value, where)
            except _Invalid:
                continue
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise _Invalid(where, f"must be {names}, got {_kind(value)}")
    if tp is type(None):
        if value is not None:
            raise _Invalid(where, f"must be null, got {_kind(value)}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid(where, f"must be true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(where, f"must be an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(where, f"must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise _Invalid(where, f"must be a finite number, got {value!r}")
        return value  # an int stays an int: it is written back as it was read
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(where, f"must be a string, got {_kind(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid(where, f"must be a list, got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Invalid(where, f"must be a list of {len(args)}, got {len(value)} entries")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, got {_kind(value)}")
        vt = args[1] if args else Any
        return {k: _decode(vt, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, _Record):
        return tp._decode(value, where)
    raise TypeError(f"result.py: no decoder for {tp!r}")  # a programming error, not bad input


def _encode(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


class _Record:
    """A JSON object as a frozen dataclass: fields in the file's key order; `opt` fields may be
    absent (their keys then go in `omitted`, and stay out when written back)."""

    omitted: frozenset[str] | None

    @classmethod
    def _fields(cls) -> list[tuple[dataclasses.Field[Any], str, Any]]:
        hints = get_type_hints(cls, include_extras=True)  # FloatOrNaN keeps its mark
        return [(f, f.metadata.get("key", f.name), hints[f.name]) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if not f.metadata.get("internal")]

    @classmethod
    def _decode(cls: type[R], value: Any, where: str) -> R:
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, got {_kind(value)}")
        fields = cls._fields()
        known = {k for _, k, _ in fields}
        extra = [k for k in value if k not in known]
        if extra:
            raise _Invalid(f"{where}.{extra[0]}" if where else extra[0],
                           f"unknown key (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        omitted = []
        for f, k, tp in fields:
            sub = f"{where}.{k}" if where else k
            if k not in value:
                if not f.metadata.get("optional"):
                    raise _Invalid(sub, "missing")
                omitted.append(k)
                continue
            kwargs[f.name] = _decode(tp, value[k], sub)
        out = cls(**kwargs, omitted=frozenset(omitted))  # type: ignore[call-arg]
        out.check(where)
        return out

    def check(self, where: str) -> None:
        """Relations between fields (sizes, ranges): _Invalid naming the field."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f, k, _ in self._fields():
            value = getattr(self, f.name)
            if self.omitted is not None:
                if k in self.omitted:
                    continue
            elif f.metadata.get("optional") and not f.metadata.get("write_default") and value == f.default:
                continue
            out[k] = _encode(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls: type[R], data: Any, source: str | Path = "result") -> R:
        try:
            return cls._decode(data, "")
        except _Invalid as e:
            raise ResultFileError(f"{source}: {e.where}: {e.what}" if e.where else f"{source}: {e.what}") from None

    @classmethod
    def from_json(cls: type[R], path: str | Path) -> R:
        """The file at `path`, validated; ResultFileError (one line) when it is not one."""
        return cls.from_dict(read_json_object(path), path)


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object, or one line naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())  # NaN / Infinity parse: the field check names where they are
    except OSError as e:
        raise ResultFileError(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ResultFileError(f"{path}: not UTF-8 text") from None
    except ValueError as e:
        raise ResultFileError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: must hold a JSON object, got {_kind(data)}")
    return data


def _rate(values: tuple[float, ...] | float, where: str) -> None:
    for v in values if isinstance(values, tuple) else (values,):
        if not 0.0 <= v <= 1.0:
            raise _Invalid(where, f"success rates lie in [0, 1], got {v!r}")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _curve(success: tuple[float, ...], returns: tuple[float, ...], where: str, prefix: str = "") -> None:
    if not success:
        raise _Invalid(_at(where, f"{prefix}success_by_round"), "must hold round 0 at least")
    if len(returns) != len(success):
        raise _Invalid(_at(where, f"{prefix}return_by_round"),
                       f"must have one entry per round ({len(success)}), got {len(returns)}")
    _rate(success, _at(where, f"{prefix}success_by_round"))


def _stopped_pair(pair: tuple[int, int] | None, where: str) -> None:
    if pair is not None and not 0 <= pair[0] <= pair[1]:
        raise _Invalid(where, f"must be [tasks done, tasks planned] with 0 <= done <= planned, got {list(pair)}")


@dataclass(frozen=True)
class Segment(_Record):
    """One stretch of a seed's training, from a start or resume to its end (a line of the run dir's
    segments.jsonl, or of its runs.jsonl)."""

    command: str
    git_commit: str | None
    from_env_steps: int
    to_env_steps: int
    wall_seconds: float
    warm_restart: bool = opt(False, write_default=False)  # PEARL resumed without its buffers
    final_eval_stopped: tuple[int, int] | None = opt(None, write_default=False)  # (done, planned)
    ended_by: str | None = opt(None, write_default=False)  # the error that ended it
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        if self.to_env_steps < self.from_env_steps:
            raise _Invalid(_at(where, "to_env_steps"), f"must be >= from_env_steps ({self.from_env_steps}), "
                                                       f"got {self.to_env_steps}")
        if self.wall_seconds < 0:
            raise _Invalid(_at(where, "wall_seconds"), f"must be >= 0, got {self.wall_seconds}")
        _stopped_pair(self.final_eval_stopped, _at(where, "final_eval_stopped"))


@dataclass(frozen=True)
class ClassSuccess(_Record):
    """One class of goals in a Meta-World-protocol evaluation."""

    success: float
    return_: float = renamed("return")
    success_pre_adaptation: float = field(default=0.0)
    goals: int = field(default=0)
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        _rate(self.success, _at(where, "success"))
        _rate(self.success_pre_adaptation, _at(where, "success_pre_adaptation"))
        if self.goals < 1:
            raise _Invalid(_at(where, "goals"), f"must be >= 1, got {self.goals}")


@dataclass(frozen=True)
class MetaworldSummary(_Record):
    """A Meta-World-protocol evaluation (metarl.training.evaluation.MetaworldResult.to_dict and
    what the trainer and `metarl eval` add to it): a seed's `metaworld` entry, and the
    `<name>.eval_metaworld*.json` files (those also carry env_steps, checkpoint, seed,
    wall_seconds)."""

    env_steps: int | None = opt(None, write_default=False)
    protocol: str = "metaworld"
    adaptation_episodes: int = 10
    adaptation_steps: int = 1
    evaluation_episodes: int = 3
    adaptation_deterministic: bool = False
    evaluation_deterministic: bool = False
    evaluation_state: str = opt("continue")  # files from before the setting ran "continue"
    horizon: int = 0
    n_goals: int | None = opt(None)
    success: float = 0.0
    success_pre_adaptation: float = 0.0
    success_metaworld_pooled: float = 0.0
    pool_size: int = 0
    return_: float | None = opt(None, key="return")
    per_class: dict[str, ClassSuccess] = field(default_factory=dict)
    checkpoint: str | None = opt(None, write_default=False)
    split: str | None = opt(None)
    seed: int | None = opt(None, write_default=False)
    benchmark: str | None = opt(None)
    env_name: str | None = opt(None)
    agent: str | None = opt(None)
    pearl_context: str | None = opt(None, write_default=False)  # PEARL only; files before it used "all"
    stopped: bool = opt(False, write_default=False)  # a signal cut the evaluation short
    n_goals_planned: int | None = opt(None, write_default=False)
    wall_seconds: float | None = opt(None, write_default=False)
    omitted: frozenset[str] | None = _omitted()


    def check(self, where: str) -> None:
        if self.protocol != "metaworld":
            raise _Invalid(_at(where, "protocol"), f"must be 'metaworld', got {self.protocol!r}")
        for k in ("success", "success_pre_adaptation", "success_metaworld_pooled"):
            _rate(getattr(self, k), _at(where, k))
        if not self.per_class:
            raise _Invalid(_at(where, "per_class"), "must name one class at least")
        for k in ("adaptation_episodes", "evaluation_episodes", "horizon", "pool_size"):
            if getattr(self, k) < 1:
                raise _Invalid(_at(where, k), f"must be >= 1, got {getattr(self, k)}")
        if self.adaptation_steps < 0:
            raise _Invalid(_at(where, "adaptation_steps"), f"must be >= 0, got {self.adaptation_steps}")


@dataclass(frozen=True)
class Selected(_Record):
    """eval.select_best: the checkpoint chosen on training tasks (best.json) and its held-out curve."""

    score: tuple[float, float]
    iteration: int
    env_steps: int
    train_success_by_round: tuple[float, ...]
    train_return_by_round: tuple[float, ...]
    n_train_tasks: int
    success_by_round: tuple[float, ...]
    return_by_round: tuple[float, ...]
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        _curve(self.train_success_by_round, self.train_return_by_round, where, "train_")
        _curve(self.success_by_round, self.return_by_round, where)


@dataclass(frozen=True)
class SeedResult(_Record):
    """One seed's run: its run dir, how far it trained, and its final held-out evaluation."""

    seed: int
    run_dir: str
    env_steps: int
    stopped_early: bool = opt(False)
    final_eval_stopped: tuple[int, int] | None = opt(None)  # (tasks done, planned): a partial evaluation
    warm_restart: bool = opt(False)
    wall_seconds: float = 0.0
    segments: tuple[Segment, ...] = opt(())
    success_by_round: tuple[float, ...] = ()
    return_by_round: tuple[float, ...] = ()
    n_tasks: int = 0
    metaworld: MetaworldSummary | None = opt(None, write_default=False)  # eval.protocol: metaworld
    selected: Selected | None = opt(None, write_default=False)  # eval.select_best
    omitted: frozenset[str] | None = _omitted()


    def check(self, where: str) -> None:
        _curve(self.success_by_round, self.return_by_round, where)
        if self.n_tasks < 1:
            raise _Invalid(_at(where, "n_tasks"), f"must be >= 1, got {self.n_tasks}")
        _stopped_pair(self.final_eval_stopped, _at(where, "final_eval_stopped"))
        if self.wall_seconds < 0:
            raise _Invalid(_at(where, "wall_seconds"), f"must be >= 0, got {self.wall_seconds}")


@dataclass(frozen=True)
class MetaTest(_Record):
    """The held-out adaptation curve, mean over seeds."""

    success_by_round: tuple[float, ...]
    return_by_round: tuple[float, ...]
    n_tasks: int
    rounds: int
    episodes_per_round: int
    split: str
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        _curve(self.success_by_round, self.return_by_round, where)
        if self.rounds != len(self.success_by_round) - 1:
            raise _Invalid(_at(where, "rounds"), f"must be the rounds after round 0 "
                                                 f"({len(self.success_by_round) - 1}), got {self.rounds}")


@dataclass(frozen=True)
class MetaTestSelected(_Record):
    """The same for the checkpoints eval.select_best chose."""

    success_by_round: tuple[float, ...]
    return_by_round: tuple[float, ...]
    n_tasks: int
    split: str
    selected_at_env_steps: tuple[int, ...]
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        _curve(self.success_by_round, self.return_by_round, where)


@dataclass(frozen=True)
class Result(_Record):
    """`benchmarks/results/<name>.json`: a preset trained for some seeds and evaluated on held-out tasks."""

    preset: str
    agent: str
    benchmark: str
    env_name: str | None
    seeds: tuple[int, ...]
    env_steps: int
    budget_env_steps: int | None = opt(None)
    stopped_early: bool = opt(False)
    warm_restart: bool = opt(False)  # a PEARL seed resumed without its buffers: not bit-exact
    wall_seconds: float = 0.0
    machine: str = ""
    device: str = ""
    torch: str = ""
    command: str = ""
    git_commit: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    meta_test: MetaTest | None = None
    per_seed: tuple[SeedResult, ...] = ()
    meta_test_selected: MetaTestSelected | None = opt(None, write_default=False)
    omitted: frozenset[str] | None = _omitted()


    def check(self, where: str) -> None:
        if self.meta_test is None:
            raise _Invalid("meta_test", "must be an object, got null")
        if not self.per_seed:
            raise _Invalid("per_seed", "must hold one seed at least")
        if len(self.seeds) != len(self.per_seed):
            raise _Invalid("seeds", f"must name one seed per per_seed entry ({len(self.per_seed)}), "
                                    f"got {len(self.seeds)}")
        for i, (s, r) in enumerate(zip(self.seeds, self.per_seed)):
            if r.seed != s:
                raise _Invalid(f"per_seed[{i}].seed", f"must be seeds[{i}] ({s}), got {r.seed}")

    @property
    def mean(self) -> MetaTest:
        """meta_test (never None in a validated result)."""
        assert self.meta_test is not None
        return self.meta_test

    @property
    def eval_protocol(self) -> str:
        """The config's eval.protocol ("curve" for configs from before the setting)."""
        ev = self.config.get("eval", {})
        return str(ev.get("protocol", "curve")) if isinstance(ev, dict) else "curve"

    @property
    def agent_fields(self) -> dict[str, Any]:
        """The config's `agent:` section as written."""
        a = self.config.get("agent", {})
        return a if isinstance(a, dict) else {}

    @property
    def config_env_steps(self) -> int | None:
        """The config's run.env_steps (the budget the seeds trained towards)."""
        run = self.config.get("run", {})
        steps = run.get("env_steps") if isinstance(run, dict) else None
        return steps if isinstance(steps, int) else None


# ---- the aggregate over a row's seeds (`metarl bench report`: metarl.app.bench.report.aggregate) --------
@dataclass(frozen=True, kw_only=True)
class ProtocolSettings(_Record):
    """The settings of a row's Meta-World-protocol evaluation, as its first seed's file records them
    (evaluation_state and pearl_context only where that file has them)."""

    adaptation_episodes: int
    adaptation_steps: int
    evaluation_episodes: int
    adaptation_deterministic: bool
    evaluation_deterministic: bool
    evaluation_state: str = opt("continue")
    pool_size: int
    pearl_context: str | None = opt(None, write_default=False)
    omitted: frozenset[str] | None = _omitted()

    @classmethod
    def of(cls, mw: MetaworldSummary) -> ProtocolSettings:
        """`mw`'s settings, each key written where `mw` writes it."""
        written = mw.to_dict()
        return cls.from_dict({k: written[k] for _, k, _ in cls._fields() if k in written}, "protocol settings")


@dataclass(frozen=True)
class HistoryPoint(_Record):
    """A periodic evaluation: mean success after adaptation at `env_steps`."""

    env_steps: int
    success: float
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        _rate(self.success, _at(where, "success"))


@dataclass(frozen=True)
class AggregateSeed(_Record):
    """One seed's figures on a split (null: not evaluated that way)."""

    seed: int | None  # null: a result of several seeds without a seed suffix
    success_final: float | None
    success_max: float | None
    success_metaworld_pooled: float | None
    history: tuple[HistoryPoint, ...]
    omitted: frozenset[str] | None = _omitted()

    def check(self, where: str) -> None:
        for k in ("success_final", "success_max", "success_metaworld_pooled"):
            if getattr(self, k) is not None:
                _rate(getattr(self, k), _at(where, k))


@dataclass(frozen=True, kw_only=True)
class AggregateSplit(_Record):
    """A row's figures on the held-out goals (`meta_test`) or the training goals (`meta_train`), over
    its seeds: means, 95% Student-t intervals (null for one seed) and each seed's figures.

    A split no seed was evaluated on (success_final null) has every figure null, no seeds, no classes
    and no success_pre_adaptation key, and is written in the order of EMPTY_KEYS (as the report
    always wrote it). success_pre_adaptation is null on meta_train."""

    success_final: float | None
    success_final_ci95: float | None
    success_max: float | None
    success_max_ci95: float | None
    success_metaworld_pooled: float | None
    success_pre_adaptation: float | None = opt(None)  # absent on an empty split
    per_seed: tuple[AggregateSeed, ...]
    per_class: dict[str, FloatOrNaN]  # NaN: a class some seed has no figure for
    omitted: frozenset[str] | None = _omitted()

    EMPTY_KEYS = ("success_final", "success_max", "success_final_ci95", "success_max_ci95",
                  "success_metaworld_pooled", "per_seed", "per_class")

    @classmethod
    def empty(cls) -> AggregateSplit:
        return cls(success_final=None, success_final_ci95=None, success_max=None, success_max_ci95=None,
                   success_metaworld_pooled=None, per_seed=(), per_class={},
                   omitted=frozenset({"success_pre_adaptation"}))

    @property
    def is_empty(self) -> bool:
        return self.success_final is None

    def check(self, where: str) -> None:
        if self.is_empty:
            for k in ("success_final_ci95", "success_max", "success_max_ci95", "success_metaworld_pooled"):
                if getattr(self, k) is not None:
                    raise _Invalid(_at(where, k), "must be null where success_final is (no seed evaluated)")
            if self.omitted is not None and "success_pre_adaptation" not in self.omitted:
                raise _Invalid(_at(where, "success_pre_adaptation"),
                               "must be absent where success_final is null (no seed evaluated)")
            if self.per_seed or self.per_class:
                raise _Invalid(_at(where, "per_seed" if self.per_seed else "per_class"),
                               "must be empty where success_final is null (no seed evaluated)")
            return
        if self.omitted is not None and "success_pre_adaptation" in self.omitted:
            raise _Invalid(_at(where, "success_pre_adaptation"), "missing")
        if not self.per_seed:
            raise _Invalid(_at(where, "per_seed"), "must hold one seed at least")
        for k in ("success_final", "success_max", "success_metaworld_pooled", "success_pre_adaptation"):
            if getattr(self, k) is not None:
                _rate(getattr(self, k), _at(where, k))
        for k in ("success_final_ci95", "success_max_ci95"):
            ci = getattr(self, k)
            if ci is not None and ci < 0:
                raise _Invalid(_at(where, k), f"must be >= 0, got {ci}")
        if self.success_max is None and self.success_max_ci95 is not None:
            raise _Invalid(_at(where, "success_max_ci95"), "must be null where success_max is")
        for c, v in self.per_class.items():
            if not math.isnan(v):
                _rate(v, _at(where, f"per_class.{c}"))

    def to_dict(self) -> dict[str, Any]:
        if self.is_empty:
            return {k: _encode(getattr(self, k)) for k in self.EMPTY_KEYS}
        return super().to_dict()


@dataclass(frozen=True)
class Aggregate(_Record):
    """`benchmarks/results/<row>.json` (`<row>_all_seeds.json` where a result file has the row's name):
    a benchmark row's Meta-World-protocol figures over its seeds, as `metarl bench report` writes it.
    The lists from `seeds` on hold one entry per seed, in the order of `seeds` (`machine`: the
    machines, sorted, each once)."""

    preset: str
    agent: str
    benchmark: str
    env_name: str | None
    horizon: int
    protocol: str
    protocol_settings: ProtocolSettings
    seeds: tuple[int | None, ...]
    env_steps: tuple[int, ...]
    budget_env_steps: int | None
    stopped_early: tuple[bool, ...]
    wall_seconds: tuple[float, ...]
    machine: tuple[str, ...]
    command: tuple[str, ...]
    git_commit: tuple[str | None, ...]
    meta_test: AggregateSplit
    meta_train: AggregateSplit
    result_files: tuple[str, ...]
    periodic_protocol: tuple[str | None, ...]  # null: a second evaluation of the same checkpoint
    omitted: frozenset[str] | None = _omitted()

    PER_SEED = ("env_steps", "stopped_early", "wall_seconds", "command", "git_commit", "result_files",
                "periodic_protocol")

    def check(self, where: str) -> None:
        if self.protocol != "metaworld":
            raise _Invalid(_at(where, "protocol"), f"must be 'metaworld', got {self.protocol!r}")
        if not self.seeds:
            raise _Invalid(_at(where, "seeds"), "must hold one seed at least")
        n = len(self.seeds)
        for k in self.PER_SEED:
            if len(getattr(self, k)) != n:
                raise _Invalid(_at(where, k), f"must have one entry per seed ({n}), got {len(getattr(self, k))}")
        if not self.machine:
            raise _Invalid(_at(where, "machine"), "must name one machine at least")
        if self.meta_test.is_empty:
            raise _Invalid(_at(where, "meta_test.success_final"), "must be a number, got null")
        for key in ("meta_test", "meta_train"):
            split: AggregateSplit = getattr(self, key)
            if split.is_empty:
                continue
            if len(split.per_seed) != n:
                raise _Invalid(_at(where, f"{key}.per_seed"),
                               f"must have one entry per seed ({n}), got {len(split.per_seed)}")
            for i, (s, p) in enumerate(zip(self.seeds, split.per_seed)):
                if p.seed != s:
                    raise _Invalid(_at(where, f"{key}.per_seed[{i}].seed"), f"must be seeds[{i}] ({s}), got {p.seed}")
