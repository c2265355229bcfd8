"""Config fields that say what they allow: one declarative constraint per field, one check.

A config section is a frozen dataclass that extends `Section`; each field states its
constraint in its metadata, and `Section.__post_init__` checks them all, in field order:

    @dataclass(frozen=True)
    class MyConfig(Section):
        SECTION: ClassVar[str] = "agent"
        lr: float = field(default=3e-4, metadata=positive())
        discount: float = field(default=0.99, metadata=in_range(0.0, 1.0, lo_open=True))
        mode: Mode = field(default=Mode.A, metadata=one_of(Mode, what="mode"))  # class Mode(Choice)

A violation raises one line, `ConfigError("<section>.<field>: must be ..., got <value>")`.
A rule that no range or choice says (a plain file name, a cluster address) is a `satisfies(test,
rule)` constraint; a field may carry several constraints (`all_of`). Checks that involve several
fields go in `validate()`, which runs after the per-field ones.

The same constraints check values that do not come from a config: a command-line flag with the
range of a field (`check(args.episodes, EvalSection.constraint("episodes_per_round"), "--episodes")`)
or a constructor's argument (`check(n_slots, positive(), "n_slots")`), so a range is written once.
The loader (metarl/training/config.py) has already refused unknown keys, wrong types and non-finite
floats before a section is built; these checks are what is left: ranges and choices.

A field that takes one of several strings is typed with a `Choice` (a StrEnum): the loader
hands it the string, the check turns it into the member. A member *is* its string (equal,
same hash, same YAML/JSON once `to_dict` has made it plain), so presets, `--set` values and
the configs stored in checkpoints load and compare as before.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from metarl.core.types import ConfigError

KEY = "constraint"

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10: what enum.StrEnum does, for string values
    class StrEnum(str, enum.Enum):
        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class Choice(StrEnum):
    """The allowed strings of a config field. A member is a `str` equal to its value; its repr
    is the string's too, so messages that show a value (`{x!r}`) read as they did for plain
    strings."""

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


@dataclass(frozen=True)
class Constraint:
    """What one field allows: a number in [lo, hi] (either end open or absent), finite, one of
    `choices`, or a list of layer sizes (each > 0); `nullable` also allows None."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = False
    choices: tuple[Any, ...] | None = None
    what: str = ""             # the noun of "unknown <what> 'x'" (one_of)
    sizes: bool = False        # a tuple of layer sizes, each > 0
    nonempty: bool = False     # ... with at least one layer
    nullable: bool = False
    counts: bool = False       # an integer range, written lo..hi
    note: str = ""             # appended to the rule, e.g. "(0: one episode)"
    enum: type[Choice] | None = None  # one_of(SomeChoice): an allowed string becomes its member
    test: Callable[[Any], bool] | None = None  # satisfies(test, rule): any other rule, said in `says`
    says: Callable[[Any], str] | str = ""      # ... the rule in words, or value -> the whole message

    def allows(self, v: Any) -> bool:
        if v is None:
            return self.nullable
        if self.test is not None:
            return bool(self.test(v))
        if self.choices is not None:
            return v in self.choices
        if self.sizes:
            return all(h > 0 for h in v) and (len(v) > 0 or not self.nonempty)
        if self.finite and not math.isfinite(v):
            return False
        if self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def rule(self) -> str:
        """What is allowed, in words ("must be in (0, 1]")."""
        if self.sizes:
            return ("must be a non-empty list of layer sizes > 0" if self.nonempty
                    else "every layer size must be > 0")
        if self.lo is not None and self.hi is not None:
            if self.counts:
                rule = f"must be in {self.lo}..{self.hi}"
            else:
                rule = f"must be in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            rule = f"must be {'>' if self.lo_open else '>='} {self.lo}"
        elif self.hi is not None:
            rule = f"must be {'<' if self.hi_open else '<='} {self.hi}"
        else:
            return "must be a finite number" if self.finite else "must be a number"
        if self.finite:
            rule = rule.replace("must be", "must be a finite number", 1)
        return rule

    def error(self, v: Any) -> str:
        """The message after "<section>.<field>: "."""
        if self.test is not None:
            return self.says(v) if callable(self.says) else f"{self.says}, got {v!r}"
        if self.choices is not None:
            allowed = ", ".join(str(c) for c in self.choices)
            return f"unknown {self.what + ' ' if self.what else ''}{v!r}; allowed: {allowed}"
        shown = list(v) if self.sizes and v is not None else v
        null = " or null" if self.nullable else ""
        note = f" {self.note}" if self.note else ""
        return f"{self.rule()}{null}{note}, got {shown}"


Spec = Mapping[str, "Constraint | tuple[Constraint, ...]"]  # a field's metadata


def _spec(**kw: Any) -> Spec:
    return {KEY: Constraint(**kw)}


def positive(*, finite: bool = False, nullable: bool = False, note: str = "") -> Spec:
    """> 0."""
    return _spec(lo=0, lo_open=True, finite=finite, nullable=nullable, note=note)


def nonnegative(*, finite: bool = False, note: str = "") -> Spec:
    """>= 0."""
    return _spec(lo=0, finite=finite, note=note)


def in_range(lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False,
             nullable: bool = False, note: str = "") -> Spec:
    """lo <= x <= hi, each end closed unless `lo_open` / `hi_open` (None: no bound)."""
    return _spec(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, nullable=nullable, note=note)


def int_in(lo: int, hi: int, *, nullable: bool = False, note: str = "") -> Spec:
    """An integer in lo..hi (both ends included)."""
    return _spec(lo=lo, hi=hi, counts=True, nullable=nullable, note=note)


def finite(*, nullable: bool = False, note: str = "") -> Spec:
    """Any finite number (for fields built in code; the loader refuses .nan/.inf already)."""
    return _spec(finite=True, nullable=nullable, note=note)


def one_of(*choices: Any, what: str = "") -> Spec:
    """One of `choices`, or of the values of one `Choice` class (the field then holds the
    member): "unknown <what> 'x'; allowed: a, b"."""
    if len(choices) == 1 and isinstance(choices[0], type) and issubclass(choices[0], Choice):
        return _spec(choices=choices[0].values(), what=what, enum=choices[0])
    return _spec(choices=tuple(choices), what=what)


def layer_sizes(*, nonempty: bool = False) -> Spec:
    """A list of hidden-layer sizes, each > 0 (at least one with `nonempty`)."""
    return _spec(sizes=True, nonempty=nonempty)


def satisfies(test: Callable[[Any], bool], says: Callable[[Any], str] | str, *, nullable: bool = False) -> Spec:
    """A rule no range or choice says: `test(value)` must hold. `says` is the rule in words
    ("must be a camera name such as 'corner'", the message then ends ", got <value!r>"), or a
    function of the value that writes the whole message."""
    return _spec(test=test, says=says, nullable=nullable)


def all_of(*specs: Spec) -> Spec:
    """Several constraints on one field, checked in order (the first violated one is reported)."""
    return {KEY: tuple(c for spec in specs for c in constraints(spec.get(KEY)))}


def constraints(c: Any) -> tuple[Constraint, ...]:
    """A field's metadata entry (a Constraint, a tuple of them, or nothing) as a tuple."""
    if isinstance(c, Constraint):
        return (c,)
    if isinstance(c, tuple):
        return tuple(x for x in c if isinstance(x, Constraint))
    return ()


def constraint_of(f: dataclasses.Field) -> Constraint | None:
    """The field's first constraint (None: it has none)."""
    cs = constraints(f.metadata.get(KEY))
    return cs[0] if cs else None


T = TypeVar("T")


def check(value: T, spec: Spec | Constraint | tuple[Constraint, ...], name: str, *, optional: bool = False) -> T:
    """`value` if every constraint of `spec` allows it, else `ConfigError("<name>: <what is
    allowed>, got <value>")`, one line. `name` is a dotted field ("eval.rounds") or a flag
    ("--rounds"). `optional`: None passes (a flag that was not given) and the message does not
    offer null. A value of a `one_of(SomeChoice)` field comes back as its member."""
    if optional and value is None:
        return value
    cs = constraints(spec.get(KEY) if isinstance(spec, Mapping) else spec)
    for c in cs:
        if optional:
            c = dataclasses.replace(c, nullable=False)
        if not c.allows(value):
            raise ConfigError(f"{name}: {c.error(value)}")
        if c.enum is not None and value is not None:
            value = c.enum(value)  # type: ignore[assignment]  # the member is the string
    return value


class Section:
    """Base of every config section (a frozen dataclass): checks each field's constraint, then
    `validate()`. SECTION is the prefix of the field names in messages ("agent", "run")."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            cs = constraints(f.metadata.get(KEY))
            if cs:
                value = getattr(self, f.name)
                checked = check(value, cs, self.label(f.name))
                if checked is not value:
                    object.__setattr__(self, f.name, checked)  # a Choice's member; frozen: set once, here
        self.validate()

    @classmethod
    def label(cls, name: str) -> str:
        """How messages name field `name`: "<SECTION>.<name>"."""
        return f"{cls.SECTION}.{name}"

    @classmethod
    def constraint(cls, name: str) -> Spec:
        """The constraints of field `name`: for `check` on a value from elsewhere (a flag), or the
        metadata of a field elsewhere that allows the same."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == name:
                return {KEY: constraints(f.metadata.get(KEY))}
        raise KeyError(name)

    def validate(self) -> None:
        """Checks across fields; raise `self.refuse(field, message)`."""

    def refuse(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label(name)}: {message}")


@dataclass(frozen=True)
class AgentConfig(Section):
    """The `agent:` section of a preset (here, below the agents, so that the run config can type
    its `agent` field without importing them). Every agent's config (metarl/agents/*.py) extends
    it, redeclaring `name` with the agent's registry name as default (and `meta_batch` if its
    default differs)."""

    SECTION: ClassVar[str] = "agent"
    name: str = ""
    """The agent's registry name (metarl.agents.AGENTS)."""
    meta_batch: int = field(default=20, metadata=positive())
    """Task slots the sampler needs: tasks sampled together in an iteration."""

    def validate(self) -> None:
        default = {f.name: f.default for f in dataclasses.fields(self)}["name"]
        if self.name != default:
            raise self.refuse("name", f"must be {default!r} for {type(self).__name__}, got {self.name!r}")
