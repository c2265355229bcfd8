"""Run configuration: YAML presets + `--set a.b=c` overrides, validated into frozen dataclasses.

Every error is a ConfigError whose message starts with the dotted field name
and says what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol, Sequence

import yaml

from metarl.core.fields import AgentConfig, Choice, Section, all_of, int_in, nonnegative, one_of, positive, satisfies
from metarl.core.types import ConfigError

if TYPE_CHECKING:
    import torch



class Device(Choice):
    """run.device: where the learner runs (auto: cuda when available)."""
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class BenchmarkName(Choice):
    """env.benchmark: a Meta-World benchmark or the toy 2-D point goals (envs.make_benchmark)."""
    ML1 = "ML1"
    ML10 = "ML10"
    ML45 = "ML45"
    TOY = "toy"


class ToyGoals(Choice):
    """env.toy_goals: where the toy goals lie (metarl/envs/toy.py)."""
    SQUARE = "square"
    SEMICIRCLE = "semicircle"


class ToyReward(Choice):
    """env.toy_reward: minus the distance (dense), or 1 near the goal (sparse)."""
    DENSE = "dense"
    SPARSE = "sparse"


class Backend(Choice):
    """env.backend: who runs the sampler's env.n_workers."""
    MULTIPROCESS = "multiprocess"
    RAY = "ray"


class EvalProtocol(Choice):
    """eval.protocol: our adaptation curve, or the Meta-World+ meta-test protocol."""
    CURVE = "curve"
    METAWORLD = "metaworld"


class EvaluationState(Choice):
    """eval.evaluation_state: where the Meta-World protocol's evaluation episodes start."""
    CONTINUE = "continue"
    RESTART = "restart"


class PearlContext(Choice):
    """eval.pearl_context: what PEARL's evaluation posterior is computed from (metarl.agents.pearl.EVAL_CONTEXTS)."""
    ALL = "all"
    TRAIN_SIZE = "train_size"


DEVICES = Device.values()
PROTOCOLS = EvalProtocol.values()
EVALUATION_STATES = EvaluationState.values()
PEARL_CONTEXTS = PearlContext.values()
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding accept any seed in 0..2**32-1 on every platform


class AgentClass(Protocol):
    """What the config needs of a registered agent: the dataclass of its `agent:` section."""

    @property
    def Config(self) -> type: ...  # noqa: N802 (the agent classes' attribute name)


# name -> agent class, e.g. agents.AGENTS: handed in by the caller (cli, trainer, tests), so that
# this module, which the whole core uses, does not depend on the agents package
Registry = Mapping[str, AgentClass]
MAX_NAME_BYTES = 255  # run.name: one file name (NAME_MAX of Linux file systems)
MAX_TORCH_THREADS = 1024  # run.torch_threads: torch's thread pools take an int; 10**12 overflowed in there
VIDEO_MAX_TASKS = 100  # eval.video_tasks: each task is filmed for every round (~30 s a clip at 240x240)
# Sizes bounded for any machine (each also goes into the RAM check, metarl/training/resources.py). The presets
# and the README's commands use at most: 9 rounds, 10 episodes a round, 2 adaptation steps, 10
# adaptation and 3 evaluation episodes, 500-step episodes, 40 toy goals
MAX_EVAL_ROUNDS = 1000          # eval.rounds, eval --rounds
MAX_EVAL_EPISODES = 1000        # eval.episodes_per_round, eval --episodes, --adaptation-episodes, --evaluation-episodes
MAX_ADAPTATION_STEPS = 100      # eval --adaptation-steps
MAX_HORIZON = 100_000           # env.max_episode_steps, eval --horizon (Meta-World: at most 500)
MAX_TOY_TASKS = 1_000_000       # env.toy_tasks (about 800 bytes a goal, both splits)
MAX_PER_CLASS = 100_000         # eval.*tasks_per_class, eval --tasks-per-class, --goals-per-class


def _ray_address_ok(a: object) -> bool:
    return isinstance(a, str) and a.strip() != "" and not any(c.isspace() for c in a)


def _name_size(name: str) -> int:
    return len(name.encode("utf-8", "surrogatepass"))


RUN_NAME = all_of(
    satisfies(lambda n: _plain_name(n), lambda n: f"must be a plain directory name, which stays inside run.out_dir "
              f"(no '/', no '..', not absolute, not empty), got {n!r}", nullable=True),
    satisfies(str.isprintable, lambda n: f"must be printable: no control characters (newline, tab, ESC, ...), "
              f"got {n!r}", nullable=True),
    satisfies(lambda n: _name_size(n) <= MAX_NAME_BYTES, lambda n: f"must be at most {MAX_NAME_BYTES} bytes (one "
              f"file name), got {_name_size(n):,} bytes: {n[:40]!r}...", nullable=True))


@dataclass(frozen=True)
class RunSection(Section):
    SECTION: ClassVar[str] = "run"
    env_steps: int = field(default=1_000_000, metadata=positive())
    """Training env-step budget (evaluation steps not counted)."""
    seed: int = field(default=0, metadata=int_in(0, SEED_MAX))
    """Seed of the run's NumPy and torch generators (and of the goals unless env.task_seed is set)."""
    device: Device = field(default=Device.AUTO, metadata=one_of(Device, what="device"))
    """Where the learner runs: auto (cuda when available), cpu or cuda."""
    out_dir: str = "runs"
    """Run dirs are created under here."""
    name: str | None = field(default=None, metadata=RUN_NAME)
    """Run dir name (one plain file name); null: <preset>-s<seed>-<timestamp>."""
    checkpoint_every: int = field(default=1, metadata=positive())
    """Iterations between checkpoints."""
    keep_checkpoints: int = field(default=3, metadata=positive())
    """Newest checkpoints kept (best.pt aside)."""
    max_rejected_streak: int = field(default=5, metadata=positive())
    """Stop after this many iterations in a row with non-finite updates."""
    progress: bool = True
    """Rich progress bar on the console."""
    torch_threads: int = field(default=1, metadata=int_in(0, MAX_TORCH_THREADS))
    """Learner threads (0: torch's default; 1 is robust on shared cores; metarl train allows a few per core)."""


@dataclass(frozen=True)
class EnvSection(Section):
    SECTION: ClassVar[str] = "env"
    benchmark: BenchmarkName = field(default=BenchmarkName.ML1, metadata=one_of(BenchmarkName, what="benchmark"))
    """ML1, ML10, ML45 (Meta-World) or toy (2-D point goals)."""
    env_name: str | None = "reach-v3"
    """The ML1 env class (ML1 only)."""
    max_episode_steps: int | None = field(default=None, metadata=int_in(1, MAX_HORIZON, nullable=True))
    """Steps per episode; null: 500 for Meta-World, 20 for toy."""
    n_workers: int = field(default=0, metadata=nonnegative())
    """0: step task slots in this process; W > 0: W worker processes (or Ray actors)."""
    toy_tasks: int = field(default=40, metadata=int_in(1, MAX_TOY_TASKS))
    """Tasks per split of the toy distribution."""
    toy_goals: ToyGoals = field(default=ToyGoals.SQUARE, metadata=one_of(ToyGoals, what="goal shape"))
    """Where the toy goals lie: square or semicircle."""
    toy_reward: ToyReward = field(default=ToyReward.DENSE, metadata=one_of(ToyReward, what="toy reward"))
    """Toy reward: dense (minus the distance) or sparse (1 near the goal)."""
    fast_path: bool = True
    """Meta-World hot spots replaced by bit-identical code (metarl/envs/fastpath.py)."""
    task_seed: int | None = field(default=None, metadata=int_in(0, SEED_MAX, nullable=True))
    """Seed of the benchmark's goals (null: run.seed); fix it to compare seeds on one task set."""
    backend: Backend = field(default=Backend.MULTIPROCESS, metadata=one_of(Backend, what="backend"))
    """Who runs the n_workers: multiprocess (worker processes) or ray (Ray actors)."""
    ray_address: str | None = field(default=None, metadata=satisfies(
        _ray_address_ok, "must be null, 'auto' or a cluster address such as 10.0.0.1:6379", nullable=True))
    """backend ray: null starts a local Ray, "auto" joins the running cluster, or host:port / ray://host:port."""

    def validate(self) -> None:
        if self.backend == "ray":
            import importlib.util
            if importlib.util.find_spec("ray") is None:
                raise self.refuse("backend", "'ray' needs Ray, an optional extra: pip install -e '.[ray]'")
            if self.n_workers < 1:
                raise self.refuse("n_workers", f"must be >= 1 with env.backend: ray, got {self.n_workers}")


PER_CLASS = int_in(0, MAX_PER_CLASS, note="(0: all)")


@dataclass(frozen=True)
class EvalSection(Section):
    SECTION: ClassVar[str] = "eval"
    every: int = field(default=10, metadata=nonnegative())
    """Evaluate every N iterations (0: only at the end)."""
    tasks_per_class: int = field(default=10, metadata=PER_CLASS)
    """Held-out goals per class in periodic evaluations (0: all)."""
    final_tasks_per_class: int = field(default=0, metadata=PER_CLASS)
    """Held-out goals per class in the final evaluation (0: all)."""
    rounds: int = field(default=2, metadata=int_in(0, MAX_EVAL_ROUNDS))
    """K adaptation rounds: the curve has rounds 0..K."""
    episodes_per_round: int = field(default=5, metadata=int_in(1, MAX_EVAL_EPISODES))
    """Episodes each task runs in a round."""
    deterministic: bool = False
    """Evaluate the mean action instead of sampling."""
    select_best: bool = False
    """Also evaluate on training tasks each time and keep checkpoints/best.pt; the final evaluation runs it too."""
    select_tasks_per_class: int = field(default=25, metadata=PER_CLASS)
    """Training tasks per class in those selection evaluations (0: all)."""
    protocol: EvalProtocol = field(default=EvalProtocol.CURVE, metadata=one_of(EvalProtocol, what="protocol"))
    """curve: rounds 0..K; metaworld: the Meta-World+ protocol (10 adaptation, 3 evaluation episodes; docs/design.md)."""
    evaluation_state: EvaluationState = field(default=EvaluationState.CONTINUE,
                                              metadata=one_of(EvaluationState, what="value"))
    """protocol metaworld: evaluation episodes continue the state, or restart from the adapted one (RL² as garage)."""
    pearl_context: PearlContext = field(default=PearlContext.ALL, metadata=one_of(PearlContext, what="value"))
    """PEARL: the adapted posterior from all context transitions, or train_size (embedding_batch_size) of them."""
    video_tasks: int = field(default=0, metadata=int_in(0, VIDEO_MAX_TASKS, note="(0: no video)"))
    """Final evaluation: film this many held-out tasks before and after adaptation (needs the video extra; 0: off)."""
    video_camera: str = field(default="corner", metadata=satisfies(
        lambda c: bool(c) and c.isprintable(), "must be a camera name such as 'corner'"))
    """A Meta-World camera: corner, corner2, corner3, corner4, topview, ..."""
    video_width: int = field(default=240, metadata=int_in(16, 1024))
    """Frame width in pixels."""
    video_height: int = field(default=240, metadata=int_in(16, 1024))
    """Frame height in pixels."""
    video_fps: int = field(default=30, metadata=int_in(1, 120))
    """Frames per second of the videos."""
    video_stride: int = field(default=2, metadata=int_in(1, 500))
    """Env steps per frame (2: a 500-step episode is 250 frames, 8.3 s at 30 fps)."""

    def validate(self) -> None:
        if self.select_best and self.every <= 0:
            raise self.refuse("select_best", "needs periodic evaluations (eval.every > 0) to select from")
        if self.evaluation_state != "continue" and self.protocol != "metaworld":
            raise self.refuse("evaluation_state", f"{self.evaluation_state!r} applies to the Meta-World protocol's "
                              f"evaluation episodes; it needs eval.protocol: metaworld (got {self.protocol!r})")


# Fields that do not change what training computes, so the training hash leaves them out and a
# resume may change them: the budget, device, output, console and thread count; evaluation (it draws
# from its own generator); the env fast path and where the envs run (bit-identical results).
NOT_TRAINING = ("eval", "env.fast_path", "env.backend", "env.ray_address", "run.env_steps", "run.device",
                "run.out_dir", "run.name", "run.progress", "run.keep_checkpoints", "run.torch_threads")


@dataclass(frozen=True)
class RunConfig:
    preset: str
    run: RunSection
    env: EnvSection
    agent: AgentConfig
    eval: EvalSection

    def __post_init__(self) -> None:
        """The checks across sections (each section has checked its own fields)."""
        if self.eval.pearl_context != "all" and self.agent.name != "pearl":
            raise ConfigError(f"eval.pearl_context: {self.eval.pearl_context!r} applies to PEARL's posterior; "
                              f"agent {self.agent.name!r} has none (allowed: all)")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The config as config.yaml holds it: read back by read_yaml (YAML 1.2 scalars) it is this
        config again; a string such as run.name '1e5' or '0o17' is quoted, not read back as a number."""
        return yaml.dump(self.to_dict(), Dumper=_PlainYamlDumper, sort_keys=False)

    def training_dict(self) -> dict[str, Any]:
        """What shapes training: the config without NOT_TRAINING (the budget, device, output, console,
        evaluation, the env fast path and where the envs run)."""
        d = self.to_dict()
        for name in NOT_TRAINING:
            section, _, key = name.partition(".")
            if key:
                d[section].pop(key, None)
            else:
                d.pop(section)
        return d

    def hash(self) -> str:
        """Hash of what shapes training (training_dict)."""
        return hashlib.sha256(yaml.safe_dump(self.training_dict(), sort_keys=True).encode()).hexdigest()[:16]


def changed_fields(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two config mappings (to_dict's)."""
    out = []
    for k in dict.fromkeys([*a, *b]):
        x, y = a.get(k), b.get(k)
        name = f"{prefix}{k}"
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += changed_fields(x, y, name + ".")
        elif x != y:
            out.append(name)
    return out


# Plain data, bounded: what a config (a YAML file, an override, a checkpoint's `config`) may hold
# before anything formats, hashes, dumps or walks it. A list referenced many times over (a
# pickled checkpoint's memo, a YAML alias) counts once per reference: 9 references nested 9
# deep are 9**9 values, which str() or yaml.dump would try to build in memory.
MAX_CONFIG_BYTES = 1 << 20      # a config file (the presets are under 2 KB)
MAX_CONFIG_VALUES = 10_000      # values in a config, counted per reference (a saved run config: ~60)
MAX_CONFIG_DEPTH = 8            # nesting (a saved run config: 3, e.g. agent.hidden_sizes[0])
MAX_STRING_CHARS = 4096         # any one string (PATH_MAX on Linux)
MAX_INT_BITS = 256              # any one integer (the largest field range is a seed's 0..2**32-1)
PLAIN_ALLOWED = (f"plain data (mappings with string keys, lists, strings, numbers, true/false, null) of at "
                 f"most {MAX_CONFIG_VALUES:,} values, nested at most {MAX_CONFIG_DEPTH} deep, strings of at most "
                 f"{MAX_STRING_CHARS:,} characters, no YAML anchors or aliases")


def check_plain(obj: Any, where: str, *, max_values: int = MAX_CONFIG_VALUES, max_depth: int = MAX_CONFIG_DEPTH,
                max_str: int = MAX_STRING_CHARS, leaves: tuple[type, ...] = (), key_types: tuple[type, ...] = (str,),
                shared_ok: bool = False, allowed: str = PLAIN_ALLOWED) -> None:
    """Refuse `obj` in one line unless it is plain data of bounded size: dicts (keys of
    `key_types`), lists and tuples, strings of at most `max_str` characters, bools, ints of at
    most MAX_INT_BITS bits, floats, None, and instances of `leaves`; at most `max_values` values
    counted once per reference (so shared references cannot blow up) and `max_depth` levels.
    Without `shared_ok`, a list or mapping reached twice (a shared reference: pickle's memo, a
    YAML alias) is refused outright; a config never holds one. Iterative, and it never formats
    `obj`: safe on anything `torch.load(weights_only=True)` or `yaml.safe_load` returns."""
    stack: list[tuple[Any, int, str]] = [(obj, 0, "")]
    seen = 0
    containers: set[int] = {id(obj)}

    def refuse(what: str, at: str) -> ConfigError:
        return ConfigError(f"{where}{' at ' + at if at else ''}: {what}; allowed: {allowed}")

    def push(v: Any, depth: int, at: str) -> None:
        if not shared_ok and isinstance(v, (dict, list, tuple)):
            if id(v) in containers:  # checked as it is reached, before the walk goes deeper
                raise refuse(f"refers to one {type(v).__name__} from several places (a shared reference, "
                             f"which formatting would expand copy by copy)", at)
            containers.add(id(v))
        stack.append((v, depth, at))

    while stack:
        x, depth, at = stack.pop()
        seen += 1
        if seen > max_values:
            raise refuse(f"holds more than {max_values:,} values (each reference to a shared list or mapping "
                         f"counted)", "")
        if depth > max_depth:
            raise refuse(f"is nested more than {max_depth} levels deep", at)
        if isinstance(x, dict):
            if len(x) > max_values:
                raise refuse(f"holds more than {max_values:,} values", "")
            for k, v in x.items():
                if not isinstance(k, key_types) or isinstance(k, bool):
                    raise refuse(f"has a key of type {type(k).__name__}", at)
                if isinstance(k, str) and len(k) > max_str:
                    raise refuse(f"has a key of {len(k):,} characters", at)
                name = k if isinstance(k, str) and len(k) <= 40 and k.isprintable() else "[...]"
                push(v, depth + 1, f"{at}.{name}" if at else name)
        elif isinstance(x, (list, tuple)):
            if len(x) > max_values:
                raise refuse(f"holds more than {max_values:,} values", "")
            for i, v in enumerate(x):
                push(v, depth + 1, f"{at}[{i}]")
        elif isinstance(x, str):
            if len(x) > max_str:
                raise refuse(f"has a string of {len(x):,} characters", at)
        elif isinstance(x, int):  # bool included
            if x.bit_length() > MAX_INT_BITS:
                raise refuse(f"has an integer of {x.bit_length():,} bits", at)
        elif x is None or isinstance(x, float) or (leaves and isinstance(x, leaves)):
            pass
        else:
            raise refuse(f"holds a {type(x).__name__}", at)


def _yaml12_resolvers() -> dict:
    """YAML 1.2's core schema for plain scalars instead of PyYAML's YAML 1.1: `1e-1` is a number,
    only true/false are booleans (`no`, `on`, `yes`, `off` stay strings), `1:30` is a string (not
    the sexagesimal 90), `0o17`/`0x1f` are integers, `017` is 17."""
    import re

    table: dict = {}
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = [(tag, rx) for tag, rx in resolvers
                if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
        if kept:
            table[ch] = kept
    rules = [
        ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), "tTfF"),
        ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), "-+0123456789"),
        ("tag:yaml.org,2002:float", re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), "-+0123456789."),
    ]
    for tag, rx, first in rules:
        for ch in first:
            table.setdefault(ch, []).append((tag, rx))
    return table


class _PlainYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader without anchors and aliases: an alias repeats a node by reference, so a
    few lines of aliases nested a few levels deep stand for billions of values."""

    yaml_implicit_resolvers = _yaml12_resolvers()

    def construct_yaml_int(self, node: Any) -> int:
        text = self.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text, 0)
        return int(text)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _YamlDuplicate(f"{key!r}"[:60] + f" twice (line {key_node.start_mark.line + 1})")
                seen.add(key)
            except TypeError:  # an unhashable key: the constructor below refuses it
                pass
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise _YamlAlias(f"{kind}{event.anchor} at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


class _YamlAlias(Exception):
    pass


class _YamlDuplicate(Exception):
    pass




_PlainYamlLoader.add_constructor("tag:yaml.org,2002:int", _PlainYamlLoader.construct_yaml_int)


class _PlainYamlDumper(yaml.SafeDumper):
    """yaml.SafeDumper that quotes every string which YAML 1.2 scalars (read_yaml) or YAML 1.1
    (yaml.safe_load) would read as something else: its resolvers are both tables together."""


_PlainYamlDumper.yaml_implicit_resolvers = {
    ch: [*_PlainYamlLoader.yaml_implicit_resolvers.get(ch, []), *yaml.SafeDumper.yaml_implicit_resolvers.get(ch, [])]
    for ch in {*_PlainYamlLoader.yaml_implicit_resolvers, *yaml.SafeDumper.yaml_implicit_resolvers}}


def parse_yaml(text: str, where: str) -> Any:
    """`text` as plain YAML data (no anchors or aliases), checked by check_plain; any problem
    is one ConfigError starting with `where`."""
    try:
        data = yaml.load(text, Loader=_PlainYamlLoader)  # noqa: S506 (a SafeLoader)
    except _YamlAlias as e:
        raise ConfigError(f"{where}: uses a YAML {e}; anchors and aliases are not allowed "
                          f"(write the values out)") from None
    except _YamlDuplicate as e:
        raise ConfigError(f"{where}: has the key {e}; allowed: each key once in a mapping") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: is not valid YAML ({e.__class__.__name__})") from None
    except RecursionError:
        raise ConfigError(f"{where}: is nested too deeply; allowed: {PLAIN_ALLOWED}") from None
    check_plain(data, where)
    return data


def read_yaml(path: str | Path, where: str = "config") -> Any:
    """A YAML config file as plain data: at most MAX_CONFIG_BYTES, UTF-8, no anchors or aliases,
    bounded by check_plain. Any problem is one ConfigError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where}: {path} is {size:,} bytes; allowed: at most {MAX_CONFIG_BYTES:,} bytes")
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path} ({e.strerror or e.__class__.__name__}); allowed: a YAML "
                          f"file this user can read") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {path} is over {MAX_CONFIG_BYTES:,} bytes; allowed: at most "
                          f"{MAX_CONFIG_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text; allowed: a UTF-8 YAML file") from None
    return parse_yaml(text, f"{where}: {path}")


def _plain_name(name: str) -> bool:
    seps = {"/", "\\", os.sep, os.altsep or "/"}
    return (name not in ("", ".", "..") and not any(c in name for c in seps) and "\0" not in name
            and not os.path.isabs(name))


def _plain(x):
    if isinstance(x, Choice):  # a str subclass: YAML dumpers and torch's weights-only loader want a str
        return x.value
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: must be a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)) or int(value) != value:
            raise ConfigError(f"{name}: must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            raise ConfigError(f"{name}: must be a finite number, got {value!r}") from None
        if not math.isfinite(value):  # NaN fails every bound check silently; inf disables them
            raise ConfigError(f"{name}: must be a finite number (no .nan, .inf or -.inf), got {value!r}")
        return value
    if tp is str or (isinstance(tp, type) and issubclass(tp, Choice)):  # a Choice: the section checks the value
        if not isinstance(value, str):
            raise ConfigError(f"{name}: must be a string, got {value!r}")
        return value
    return value


def build_section(cls: type, data: dict[str, Any] | None, prefix: str) -> Any:  # a `cls`
    _check_mapping(data, prefix, [f.name for f in dataclasses.fields(cls)])
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}.{key}: unknown config key; allowed: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"{prefix}: {e}") from e


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {dotted}: expected a dotted key like agent.inner_lr")
    cur = d
    for i, p in enumerate(parts[:-1]):
        nxt = cur.setdefault(p, {})
        if nxt is None:  # an empty section in the YAML (`run:`)
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            prefix = ".".join(parts[:i + 1])
            shown = repr(nxt) if len(repr(nxt)) <= 60 else repr(nxt)[:57] + "..."
            raise ConfigError(f"{prefix}: must be a mapping of {prefix}.* fields (to set {dotted}), "
                              f"got {type(nxt).__name__} {shown}")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. --set agent.inner_lr=0.05")
        key, raw = pair.split("=", 1)
        if len(raw) > MAX_STRING_CHARS:
            raise ConfigError(f"--set {key[:40]}: the value has {len(raw):,} characters; allowed: at most "
                              f"{MAX_STRING_CHARS:,}")
        value = parse_yaml(raw, f"--set {key}") if raw != "" else ""
        out.append((key.strip(), value))
    return out


def _check_mapping(data: Any, prefix: str, fields: list[str]) -> None:
    """A section is a mapping of its fields (or empty); anything else is one line."""
    if data is not None and not isinstance(data, dict):
        shown = repr(data) if len(repr(data)) <= 60 else repr(data)[:57] + "..."
        raise ConfigError(f"{prefix}: must be a mapping of {prefix}.* fields ({', '.join(fields[:4])}, ...), "
                          f"got {type(data).__name__} {shown}")


def from_dict(raw: dict[str, Any], preset: str = "custom", *, registry: Registry) -> RunConfig:
    """Validate a config mapping; the `agent:` section is built by `registry[agent.name].Config`.
    It is first checked to be plain data of bounded size (check_plain), before anything formats it."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping of sections (run, env, agent, eval), got {type(raw).__name__}")
    check_plain(raw, "config")
    raw = dict(raw)
    preset = raw.pop("preset", preset)  # present in a saved run's config.yaml
    if not isinstance(preset, str):
        raise ConfigError(f"preset: must be a string (the preset's name), got {type(preset).__name__}")
    allowed = ["run", "env", "agent", "eval"]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{key}: unknown config key; allowed: {', '.join(allowed)}")
    _check_mapping(raw.get("agent"), "agent", ["name", "meta_batch"])
    agent_raw = dict(raw.get("agent") or {})
    name = agent_raw.get("name", "maml_trpo")
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(f"agent.name: unknown agent {name!r}; allowed: {', '.join(registry)}")
    agent_cfg = build_section(registry[name].Config, agent_raw, "agent")
    env = build_section(EnvSection, raw.get("env"), "env")
    if env.benchmark != "ML1" and "env_name" not in (raw.get("env") or {}):
        env = dataclasses.replace(env, env_name=None)
    ev = build_section(EvalSection, raw.get("eval"), "eval")
    return RunConfig(preset, build_section(RunSection, raw.get("run"), "run"), env, agent_cfg, ev)


def load(path: str | Path, overrides: Sequence[str] = (), *, registry: Registry, **top: Any) -> RunConfig:
    """Load a YAML preset, apply `a.b=c` overrides, then `top` (e.g. seed=, device=) into run;
    `registry` (agents.AGENTS) names the agents and their config dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    raw = read_yaml(path)
    if raw is None:  # an empty file (or only comments): not a request for the default ML1 run
        raise ConfigError(f"config: {path} is empty; a preset is a mapping of sections (run, env, agent, "
                          f"eval), e.g. configs/toy_maml_trpo.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping of sections (run, env, agent, eval)")
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(raw, key, value)
    for key, value in top.items():
        if value is not None:
            _set_dotted(raw, f"run.{key}", value)
    cfg = from_dict(raw, preset=path.stem, registry=registry)  # first: a section of another type is said so
    # a config names what it runs: `{}` or `preset: x` alone is not a request for the default 1M-step ML1 run
    for section, key, example in (("env", "benchmark", "ML1, ML10, ML45 or toy"), ("agent", "name", None)):
        sec = raw.get(section)
        if not isinstance(sec, dict) or key not in sec:
            allowed = example or ", ".join(registry)
            raise ConfigError(f"{section}.{key}: missing in {path}; a config must name its benchmark and agent "
                              f"(allowed: {allowed}), e.g. configs/toy_maml_trpo.yaml")
    return cfg


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: 'cuda' requested but no CUDA device is available; allowed here: auto, cpu")
    if name not in DEVICES:
        raise ConfigError(f"run.device: unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    return torch.device(name)
