"""Config sections state their constraints declaratively (metarl.core.fields) and are checked in one
place; the config module gets the agent registry from its caller."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metarl.agents import AGENTS
from metarl.agents.base import AgentConfig
from metarl.training import config
from metarl.core.fields import Constraint, constraint_of, in_range, positive
from metarl.core.types import ConfigError, UpdateResult

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = [cls.Config for cls in AGENTS.values()] + [config.RunSection, config.EnvSection, config.EvalSection]
# strings that some rule of a text field refuses (satisfies(...) constraints)
BAD_TEXT = ["", "a b", "a/b", "..", "tab\there", "x" * 300]


def violating(c: Constraint, current):
    """A value the constraint refuses."""
    if c.test is not None:
        return next(x for x in BAD_TEXT if not c.test(x))
    if c.choices is not None:
        return "no-such-choice"
    if c.sizes:
        return (4, 0)
    if c.lo is not None:
        return type(current)(c.lo) if c.lo_open else type(current)(c.lo) - 1
    if c.hi is not None:
        return type(current)(c.hi) if c.hi_open else type(current)(c.hi) + 1
    return math.inf  # finite only


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_every_constrained_field_is_refused_with_one_line_naming_it(section):
    constrained = [(f, constraint_of(f)) for f in dataclasses.fields(section) if constraint_of(f) is not None]
    assert len(constrained) >= 2, "the section states its constraints declaratively"
    default = section()
    for f, c in constrained:
        bad = violating(c, getattr(default, f.name) if getattr(default, f.name) is not None else 1.0)
        with pytest.raises(ConfigError) as e:
            section(**{f.name: bad})
        msg = str(e.value)
        assert msg.startswith(f"{section.SECTION}.{f.name}: ") and "\n" not in msg, msg
        shown = str(list(bad)) if isinstance(bad, tuple) else repr(bad)[:3]
        assert ("must be" in msg or "allowed:" in msg) and shown in msg, msg


@pytest.mark.parametrize("section, kwargs, message", [
    (config.RunSection, {"env_steps": 0}, "run.env_steps: must be > 0, got 0"),
    (config.RunSection, {"seed": -1}, f"run.seed: must be in 0..{2**32 - 1}, got -1"),
    (config.RunSection, {"device": "tpu"}, "run.device: unknown device 'tpu'; allowed: auto, cpu, cuda"),
    (config.RunSection, {"torch_threads": -1}, "run.torch_threads: must be in 0..1024, got -1"),
    (AGENTS["maml_trpo"].Config, {"discount": 1.5}, "agent.discount: must be in (0, 1], got 1.5"),
    (AGENTS["maml_trpo"].Config, {"backtrack_ratio": 1.0}, "agent.backtrack_ratio: must be in (0, 1), got 1.0"),
    (AGENTS["maml_trpo"].Config, {"hidden_sizes": (8, 0)}, "agent.hidden_sizes: every layer size must be > 0, got [8, 0]"),
    (AGENTS["maml_trpo"].Config, {"learn_inner_lr": "x"},
     "agent.learn_inner_lr: unknown 'x'; allowed: none, scalar, per_parameter"),
    (AGENTS["reptile"].Config, {"outer_lr": 1.5}, "agent.outer_lr: must be in (0, 1], got 1.5"),
    (AGENTS["rl2_ppo"].Config, {"bptt_chunk": -2}, "agent.bptt_chunk: must be >= 0 (0: one episode, or the whole trial with bptt=trial), got -2"),
    (AGENTS["pearl"].Config, {"lr": math.inf}, "agent.lr: must be a finite number > 0, got inf"),
    (AGENTS["pearl"].Config, {"target_entropy": math.nan},
     "agent.target_entropy: must be a finite number or null (-act_dim), got nan"),
    (AGENTS["pearl"].Config, {"name": "maml_trpo"}, "agent.name: must be 'pearl' for PEARLConfig, got 'maml_trpo'"),
])
def test_messages(section, kwargs, message):
    with pytest.raises(ConfigError) as e:
        section(**kwargs)
    assert str(e.value) == message


def test_every_agent_config_extends_agent_config_and_keeps_name_and_meta_batch_first():
    for name, cls in AGENTS.items():
        assert issubclass(cls.Config, AgentConfig), name
        assert [f.name for f in dataclasses.fields(cls.Config)][:2] == ["name", "meta_batch"]
        assert cls.Config().name == name


def test_the_registry_comes_from_the_caller():
    @dataclass(frozen=True)
    class DummyConfig(AgentConfig):
        name: str = "dummy"
        rate: float = field(default=0.5, metadata=in_range(0, 1))
        steps: int = field(default=2, metadata=positive())

    class Dummy:
        Config = DummyConfig

    raw = {"agent": {"name": "dummy", "rate": 0.25}, "env": {"benchmark": "toy"}}
    cfg = config.from_dict(raw, registry={"dummy": Dummy})
    assert cfg.agent == DummyConfig(rate=0.25)
    with pytest.raises(ConfigError, match=r"^agent.rate: must be in \[0, 1\], got 2.0$"):
        config.from_dict({"agent": {"name": "dummy", "rate": 2.0}}, registry={"dummy": Dummy})
    with pytest.raises(ConfigError, match=r"^agent.name: unknown agent 'maml_trpo'; allowed: dummy$"):
        config.from_dict({"agent": {"name": "maml_trpo"}}, registry={"dummy": Dummy})
    # a preset loads with the real registry, and a --set override is checked by the same constraint
    path = ROOT / "configs" / "toy_reptile.yaml"
    assert config.load(path, registry=AGENTS).agent.name == "reptile"
    with pytest.raises(ConfigError, match=r"^agent.inner_steps: must be > 0, got 0$"):
        config.load(path, ["agent.inner_steps=0"], registry=AGENTS)


def test_update_result_logs_the_typed_fields_under_their_names():
    r = UpdateResult(rejected=2, success_rate=0.25, scalars={"train/kl": 0.1})
    assert r.log_scalars() == {"rollout/success_rate": 0.25, "train/kl": 0.1, "train/rejected_updates": 2.0}
