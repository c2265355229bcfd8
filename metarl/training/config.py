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

from metarl.core.fields import Choice, Section, int_in, one_of, positive
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
LOG_STD_RANGE = (-20.0, 2.0)    # agent.init_log_std: e^2 = 7.4 already spans the action box [-1, 1] three times


@dataclass(frozen=True)
class RunSection(Section):
    SECTION: ClassVar[str] = "run"
    env_steps: int = field(default=1_000_000, metadata=positive())  # training env-step budget (evaluation steps not counted)
    seed: int = field(default=0, metadata=int_in(0, SEED_MAX))
    device: Device = field(default=Device.AUTO, metadata=one_of(Device, what="device"))  # auto | cpu | cuda
    out_dir: str = "runs"           # run dirs are created under here
    name: str | None = None         # run dir name; default <preset>-s<seed>-<timestamp>
    checkpoint_every: int = field(default=1, metadata=positive())  # iterations between checkpoints
    keep_checkpoints: int = field(default=3, metadata=positive())
    # stop after this many iterations in a row with non-finite updates
    max_rejected_streak: int = field(default=5, metadata=positive())
    progress: bool = True           # rich progress bar on the console
    # learner threads (0: torch's default). 1 is robust when other processes share the cores;
    # oversubscribed OpenMP threads stall
    # threads (0: torch's default). Bounded here for any machine; `metarl train` also refuses more than
    # resources.MAX_THREADS_PER_CORE per core of the machine it runs on, and warns above one per core
    torch_threads: int = field(default=1, metadata=int_in(0, MAX_TORCH_THREADS))

    def validate(self) -> None:
        _check(self.name is None or _plain_name(self.name), "run.name",
               f"must be a plain directory name, which stays inside run.out_dir (no '/', no '..', "
               f"not absolute, not empty), got {self.name!r}")
        _check(self.name is None or self.name.isprintable(), "run.name",
               f"must be printable: no control characters (newline, tab, ESC, ...), got {self.name!r}")
        if self.name is not None:
            size = len(self.name.encode("utf-8", "surrogatepass"))
            _check(size <= MAX_NAME_BYTES, "run.name",
                   f"must be at most {MAX_NAME_BYTES} bytes (one file name), got {size:,} bytes: {self.name[:40]!r}...")


@dataclass(frozen=True)
class EnvSection(Section):
    SECTION: ClassVar[str] = "env"
    benchmark: BenchmarkName = field(default=BenchmarkName.ML1, metadata=one_of(BenchmarkName, what="benchmark"))
    env_name: str | None = "reach-v3"  # ML1 only
    max_episode_steps: int | None = None  # None: 500 for Meta-World, 20 for toy
    n_workers: int = 0              # 0: step task slots in-process; W > 0: W worker processes
    toy_tasks: int = 40             # tasks per split of the toy distribution
    toy_goals: ToyGoals = field(default=ToyGoals.SQUARE, metadata=one_of(ToyGoals, what="goal shape"))
    toy_reward: ToyReward = field(default=ToyReward.DENSE, metadata=one_of(ToyReward, what="toy reward"))
    fast_path: bool = True          # Meta-World hot spots replaced by bit-identical code (metarl/envs/fastpath.py)
    task_seed: int | None = None    # seed of the benchmark's goals (metaworld.ML10(seed=...)); None: run.seed.
                                    # Set it to compare seeds on one fixed task set (the ML10 presets use 0)
    # who runs the n_workers: multiprocess (worker processes) | ray (Ray actors)
    backend: Backend = field(default=Backend.MULTIPROCESS, metadata=one_of(Backend, what="backend"))
    ray_address: str | None = None  # backend ray: null starts a local Ray, "auto" joins the running cluster,
                                    # or a cluster address (host:port, ray://host:port)

    def validate(self) -> None:
        _check(self.n_workers >= 0, "env.n_workers", f"must be >= 0, got {self.n_workers}")
        _check(self.ray_address is None or (isinstance(self.ray_address, str) and self.ray_address.strip() != ""
                                            and not any(c.isspace() for c in self.ray_address)),
               "env.ray_address", f"must be null, 'auto' or a cluster address such as 10.0.0.1:6379, "
               f"got {self.ray_address!r}")
        if self.backend == "ray":
            import importlib.util
            _check(importlib.util.find_spec("ray") is not None, "env.backend",
                   "'ray' needs Ray, an optional extra: pip install -e '.[ray]'")
            _check(self.n_workers >= 1, "env.n_workers", f"must be >= 1 with env.backend: ray, got {self.n_workers}")
        _check(self.max_episode_steps is None or 0 < self.max_episode_steps <= MAX_HORIZON, "env.max_episode_steps",
               f"must be in 1..{MAX_HORIZON} or null, got {self.max_episode_steps}")
        _check(0 < self.toy_tasks <= MAX_TOY_TASKS, "env.toy_tasks", f"must be in 1..{MAX_TOY_TASKS}, got {self.toy_tasks}")
        _check(self.task_seed is None or 0 <= self.task_seed < 2**32, "env.task_seed",
               f"must be null or in 0..{2**32 - 1}, got {self.task_seed}")


@dataclass(frozen=True)
class EvalSection(Section):
    SECTION: ClassVar[str] = "eval"
    every: int = 10                 # evaluate every N iterations (0: only at the end)
    tasks_per_class: int = 10       # held-out goals per class in periodic evaluations (0: all)
    final_tasks_per_class: int = 0  # ... in the final evaluation (0: all)
    rounds: int = 2                 # K adaptation rounds: the curve has rounds 0..K
    episodes_per_round: int = 5
    deterministic: bool = False     # evaluate the mean action instead of sampling
    select_best: bool = False       # model selection on *training* tasks: each periodic evaluation also
                                    # runs the protocol on training tasks and keeps checkpoints/best.pt
                                    # (best mean success over rounds 1..K); the final held-out evaluation
                                    # then runs on the last policy and on best.pt
    select_tasks_per_class: int = 25  # training tasks per class in those selection evaluations (0: all)
    protocol: EvalProtocol = field(default=EvalProtocol.CURVE, metadata=one_of(EvalProtocol, what="protocol"))
                                    # curve: rounds 0..K as above; metaworld: every evaluation (periodic,
                                    # selection, final) runs the Meta-World+ protocol instead (10 adaptation
                                    # episodes, one adaptation step, 3 evaluation episodes that end on
                                    # success; rounds/episodes_per_round unused): its curve has round 0 =
                                    # the adaptation episodes, round 1 = the evaluation episodes, and the
                                    # final one also writes eval_metaworld.json (metarl/training/evaluation.py)
    evaluation_state: EvaluationState = field(default=EvaluationState.CONTINUE,
                                              metadata=one_of(EvaluationState, what="value"))
                                    # protocol metaworld only: where each evaluation episode starts.
                                    # continue: where the previous one left the agent's per-task state
                                    # (RL²: the trial goes on); restart: from the state after adaptation
                                    # (RL² as metaworld-algorithms and garage evaluate it). Recorded in
                                    # eval_metaworld.json; `metarl eval` takes it as its default
    pearl_context: PearlContext = field(default=PearlContext.ALL, metadata=one_of(PearlContext, what="value"))
                                    # PEARL only: the posterior after adaptation from all context transitions, or from
                                    # train_size = agent.embedding_batch_size of them drawn from it (as in training).
                                    # Recorded in eval_metaworld.json; `metarl eval --pearl-context` overrides it
    video_tasks: int = 0            # final evaluation only: film this many held-out tasks (one goal per class
                                    # first) before and after adaptation, into videos/ and TensorBoard
                                    # (metarl/training/video.py; needs `pip install -e '.[video]'` and EGL or OSMesa). 0: off
    video_camera: str = "corner"    # a Meta-World camera: corner, corner2, corner3, corner4, topview, ...
    video_width: int = 240
    video_height: int = 240
    video_fps: int = 30
    video_stride: int = 2           # env steps per frame (2: a 500-step episode is 250 frames, 8.3 s at 30 fps)

    def validate(self) -> None:
        _check(self.every >= 0, "eval.every", f"must be >= 0, got {self.every}")
        for name in ("tasks_per_class", "final_tasks_per_class", "select_tasks_per_class"):
            v = getattr(self, name)
            _check(0 <= v <= MAX_PER_CLASS, f"eval.{name}", f"must be in 0..{MAX_PER_CLASS} (0: all), got {v}")
        _check(not self.select_best or self.every > 0, "eval.select_best",
               "needs periodic evaluations (eval.every > 0) to select from")
        _check(0 <= self.rounds <= MAX_EVAL_ROUNDS, "eval.rounds", f"must be in 0..{MAX_EVAL_ROUNDS}, got {self.rounds}")
        _check(0 < self.episodes_per_round <= MAX_EVAL_EPISODES, "eval.episodes_per_round",
               f"must be in 1..{MAX_EVAL_EPISODES}, got {self.episodes_per_round}")
        _check(self.evaluation_state == "continue" or self.protocol == "metaworld", "eval.evaluation_state",
               f"{self.evaluation_state!r} applies to the Meta-World protocol's evaluation episodes; it needs "
               f"eval.protocol: metaworld (got {self.protocol!r})")
        _check(0 <= self.video_tasks <= VIDEO_MAX_TASKS, "eval.video_tasks",
               f"must be in 0..{VIDEO_MAX_TASKS} (0: no video), got {self.video_tasks}")
        _check(bool(self.video_camera) and self.video_camera.isprintable(), "eval.video_camera",
               f"must be a camera name such as 'corner', got {self.video_camera!r}")
        for name, lo, hi in (("video_width", 16, 1024), ("video_height", 16, 1024), ("video_fps", 1, 120),
                             ("video_stride", 1, 500)):
            v = getattr(self, name)
            _check(lo <= v <= hi, f"eval.{name}", f"must be in {lo}..{hi}, got {v}")


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
    agent: Any
    eval: EvalSection

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


def _check(ok: bool, name: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {msg}")


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
    log_std = getattr(agent_cfg, "init_log_std", None)
    lo, hi = LOG_STD_RANGE
    _check(log_std is None or lo <= log_std <= hi, "agent.init_log_std",
           f"must be in [{lo:g}, {hi:g}] (a standard deviation of e^{lo:g} to e^{hi:g}), got {log_std}")
    env = build_section(EnvSection, raw.get("env"), "env")
    if env.benchmark != "ML1" and "env_name" not in (raw.get("env") or {}):
        env = dataclasses.replace(env, env_name=None)
    ev = build_section(EvalSection, raw.get("eval"), "eval")
    _check(ev.pearl_context == "all" or name == "pearl", "eval.pearl_context",
           f"{ev.pearl_context!r} applies to PEARL's posterior; agent {name!r} has none (allowed: all)")
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
