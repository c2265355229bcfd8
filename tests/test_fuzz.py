"""Property-based fuzzing (issue 29): any config or checkpoint ends as a run (a valid config object, an
evaluation) or a one-line refusal, never another exception.

Hypothesis runs a fixed, bounded set of examples (derandomize, no example database written): the same
inputs on every machine, a few seconds in all."""
from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metarl.agents import AGENTS
from metarl.training import checkpoint, config
from metarl.app.cli import main
from metarl.core.types import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "configs" / "toy_maml_trpo.yaml"
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# every config field: run.*, env.*, eval.* and each registered agent's agent.*
FIELDS = sorted({f"{section}.{f.name}" for section, cls in (("run", config.RunSection), ("env", config.EnvSection),
                                                            ("eval", config.EvalSection))
                 for f in dataclasses.fields(cls)} |
                {f"agent.{f.name}" for cls in AGENTS.values() for f in dataclasses.fields(cls.Config)})
ALPHABET = "abAZ09 _-./:\\\n\t\x1b\x00é∞"
# strings that read as something else under YAML 1.1 or 1.2, names and values some field takes, hostile ones
WORDS = ["", ".", "..", "a/b", "/abs", "x" * 300, "1e5", "0o17", "0x1f", "1:30", "no", "yes", "null", "~", ".inf",
         "true", "toy", "ML1", "maml_trpo", "rl2_ppo", "pearl", "reptile", "curve", "metaworld", "restart", "ray",
         "cuda", "auto", "multiprocess", "semicircle", "sparse", "corner", "per_parameter", "scalar"]


def _values(big: bool) -> st.SearchStrategy:
    ints = st.integers(-3, 64) | st.sampled_from([2**31, 2**62, -2**63, 2**300])
    if big:
        ints = ints | st.integers(-2**70, 2**70)
    leaves = (st.none() | st.booleans() | ints | st.floats(allow_nan=True, allow_infinity=True)
              | st.text(ALPHABET, max_size=12) | st.sampled_from(WORDS))
    return leaves | st.lists(leaves, max_size=4) | st.dictionaries(st.text(ALPHABET, max_size=6), leaves, max_size=3)


def _set(raw: dict, dotted: str, value: Any) -> None:
    """`--set dotted=value` on a plain mapping (a refusal where a section is not a mapping)."""
    config._set_dotted(raw, dotted, value)


# fields that take free text: most values are valid, and config.yaml must give each back as it was, also
# text that reads as a number in YAML 1.1 or 1.2 (a run named 1e5 or 0o17)
NUMBERISH = st.from_regex(r"[-+]?([0-9]{1,3}(\.[0-9]*)?([eE][-+]?[0-9]{1,2})?|\.[0-9]+|0o[0-7]{1,3}|0x[0-9a-f]{1,3})",
                          fullmatch=True)
TEXT_FIELDS = ["run.name", "run.out_dir", "preset", "eval.video_camera", "env.ray_address"]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS + ["agent.name", "run.bogus", "bogus.key", "preset"]),
                                _values(big=True)), min_size=1, max_size=4)
       | st.lists(st.tuples(st.sampled_from(TEXT_FIELDS), st.text(ALPHABET, max_size=12) | st.sampled_from(WORDS)
                            | NUMBERISH), min_size=1, max_size=2))
def test_any_config_is_a_valid_config_that_reads_back_or_a_one_line_refusal(edits):
    raw = yaml.safe_load(TOY.read_text())
    try:
        for key, value in edits:
            _set(raw, key, value)
        cfg = config.from_dict(raw, registry=AGENTS)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return
    # a valid config: its config.yaml (what --resume reads back) is the same config, its hash computes
    again = config.from_dict(config.parse_yaml(cfg.to_yaml(), "config.yaml"), cfg.preset, registry=AGENTS)
    assert again == cfg and again.hash() == cfg.hash()


@FUZZ
@given(text=st.text(ALPHABET + "{}[],:&*!|>'\"#%@`-?", max_size=60))
def test_any_set_value_or_config_text_parses_or_is_refused_in_one_line(text):
    for parse in (lambda: config.parse_yaml(text, "config"), lambda: config.parse_overrides([f"agent.x={text}"])):
        try:
            parse()
        except ConfigError as e:
            assert str(e) and "\n" not in str(e), repr(str(e))


# ---- checkpoints -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fuzz")
    assert main(["train", str(TOY), "--set", f"run.out_dir={out}", "--set", "run.name=r", "--set", "run.progress=false",
                 "--set", "run.env_steps=4000", "--set", "eval.every=0", "--set", "eval.final_tasks_per_class=1",
                 "--set", "eval.rounds=0", "--set", "eval.episodes_per_round=1"]) == 0
    return checkpoint.load_file(checkpoint.list_checkpoints(out / "r")[-1])


def _paths(x: Any, at: tuple = (), depth: int = 4) -> list[tuple]:
    """Every key path of a payload down to `depth`."""
    out = [at] if at else []
    if isinstance(x, dict) and depth:
        for k, v in x.items():
            out += _paths(v, at + (k,), depth - 1)
    return out


def _tensor_edit(kind: str, old: Any) -> Any:
    t = old if isinstance(old, torch.Tensor) else torch.zeros(3)
    return {"scaled": lambda: t * 0.5 if t.is_floating_point() else t, "transposed": lambda: t.permute(*reversed(range(t.dim()))).contiguous(),
            "nan": lambda: torch.full_like(t, float("nan")) if t.is_floating_point() else t.float() * float("nan"),
            "int64": lambda: t.long(), "complex": lambda: t.to(torch.complex64), "empty": lambda: torch.empty(0),
            "scalar": lambda: torch.tensor(1.0), "bigger": lambda: torch.zeros(*(s + 1 for s in t.shape)),
            "bool": lambda: t.bool(), "double": lambda: t.double()}[kind]()


EDIT = st.one_of(st.tuples(st.just("tensor"), st.sampled_from(["scaled", "transposed", "nan", "int64", "complex", "empty",
                                                              "scalar", "bigger", "bool", "double"])),
                 st.tuples(st.just("value"), _values(big=False)), st.tuples(st.just("delete"), st.none()),
                 st.tuples(st.just("add"), _values(big=False)))


@FUZZ
@given(data=st.data())
def test_any_checkpoint_is_evaluated_or_refused_in_one_line(toy_checkpoint, capsys, data):
    payload = copy.deepcopy(toy_checkpoint)
    paths = _paths(payload)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path = data.draw(st.sampled_from(paths), label="path")
        kind, arg = data.draw(EDIT, label="edit")
        parent: Any = payload
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue  # an earlier edit replaced that branch
        key = path[-1]
        if kind == "delete":
            parent.pop(key, None)
        elif kind == "add":
            parent[f"{key}_extra"] = arg
        else:
            parent[key] = _tensor_edit(arg, parent.get(key)) if kind == "tensor" else arg
    with tempfile.TemporaryDirectory() as d:
        f, out = Path(d) / "c.pt", Path(d) / "e.csv"
        torch.save(payload, f)
        capsys.readouterr()
        rc = main(["eval", str(f), "--tasks-per-class", "1", "--rounds", "0", "--episodes", "1", "--workers", "0",
                   "--out", str(out)])
        err = capsys.readouterr().err
        if rc == 0:
            assert out.is_file(), err
        else:
            assert rc == 2, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("metarl: error: "), err
            assert not out.exists()
