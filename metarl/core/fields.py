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
Checks that involve several fields go in `validate()`, which runs after the per-field ones.
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
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

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

    def allows(self, v: Any) -> bool:
        if v is None:
            return self.nullable
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
        if self.choices is not None:
            allowed = ", ".join(str(c) for c in self.choices)
            return f"unknown {self.what + ' ' if self.what else ''}{v!r}; allowed: {allowed}"
        shown = list(v) if self.sizes and v is not None else v
        null = " or null" if self.nullable else ""
        note = f" {self.note}" if self.note else ""
        return f"{self.rule()}{null}{note}, got {shown}"


def _spec(**kw: Any) -> Mapping[str, Constraint]:
    return {KEY: Constraint(**kw)}


def positive(*, finite: bool = False, nullable: bool = False, note: str = "") -> Mapping[str, Constraint]:
    """> 0."""
    return _spec(lo=0, lo_open=True, finite=finite, nullable=nullable, note=note)


def nonnegative(*, finite: bool = False, note: str = "") -> Mapping[str, Constraint]:
    """>= 0."""
    return _spec(lo=0, finite=finite, note=note)


def in_range(lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False,
             nullable: bool = False, note: str = "") -> Mapping[str, Constraint]:
    """lo <= x <= hi, each end closed unless `lo_open` / `hi_open` (None: no bound)."""
    return _spec(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, nullable=nullable, note=note)


def int_in(lo: int, hi: int, *, nullable: bool = False) -> Mapping[str, Constraint]:
    """An integer in lo..hi (both ends included)."""
    return _spec(lo=lo, hi=hi, counts=True, nullable=nullable)


def finite(*, nullable: bool = False, note: str = "") -> Mapping[str, Constraint]:
    """Any finite number (for fields built in code; the loader refuses .nan/.inf already)."""
    return _spec(finite=True, nullable=nullable, note=note)


def one_of(*choices: Any, what: str = "") -> Mapping[str, Constraint]:
    """One of `choices`, or of the values of one `Choice` class (the field then holds the
    member): "unknown <what> 'x'; allowed: a, b"."""
    if len(choices) == 1 and isinstance(choices[0], type) and issubclass(choices[0], Choice):
        return _spec(choices=choices[0].values(), what=what, enum=choices[0])
    return _spec(choices=tuple(choices), what=what)


def layer_sizes(*, nonempty: bool = False) -> Mapping[str, Constraint]:
    """A list of hidden-layer sizes, each > 0 (at least one with `nonempty`)."""
    return _spec(sizes=True, nonempty=nonempty)


def constraint_of(f: dataclasses.Field) -> Constraint | None:
    c = f.metadata.get(KEY)
    return c if isinstance(c, Constraint) else None


class Section:
    """Base of every config section (a frozen dataclass): checks each field's constraint, then
    `validate()`. SECTION is the prefix of the field names in messages ("agent", "run")."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            c = constraint_of(f)
            value = getattr(self, f.name)
            if c is not None and not c.allows(value):
                raise ConfigError(f"{self.SECTION}.{f.name}: {c.error(value)}")
            if c is not None and c.enum is not None and value is not None:
                object.__setattr__(self, f.name, c.enum(value))  # frozen: set once, here
        self.validate()

    def validate(self) -> None:
        """Checks across fields; raise `self.refuse(field, message)`."""

    def refuse(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.SECTION}.{name}: {message}")
