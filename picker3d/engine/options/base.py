"""An option declared once: its name, default, help, group, value conversion and check.

The command line's argparse groups, the engine's configuration objects and the Scipion
protocols' ``_validate`` are all made from these declarations (no torch, no numpy here: the
Scipion layer imports this module)."""
import argparse
from dataclasses import dataclass, field, make_dataclass

from ..errors import InputError


@dataclass(frozen=True)
class Option:
    """One option of a command.

    ``name``: the keyword of the engine function and the attribute of its configuration;
    ``flag``: the command-line flag (default ``--`` + name with dashes); ``default``: the
    value when the option is not given (what ``--help`` states); ``convert``: text or value
    to the engine's value (e.g. 'auto' -> None), raising :class:`InputError`; ``check``:
    ``check(value, values)`` -> a message, or None when the value is acceptable (``values``:
    every option of the command, converted); ``cli``: False for keywords the engine offers to
    benchmarks and tests only; ``exclusive``: options sharing this name may not be given
    together on the command line; ``argparse``: further ``add_argument`` keywords (type,
    choices, nargs, metavar, action)."""
    name: str
    default: object = None
    help: str = ""
    group: str = ""
    flag: str = ""
    convert: object = None
    check: object = None
    cli: bool = True
    exclusive: str = ""
    argparse: dict = field(default_factory=dict)

    @property
    def flags(self):
        return self.flag or "--" + self.name.replace("_", "-")

    def add_to(self, group):
        kw = dict(self.argparse)
        kw.setdefault("default", self.default)
        group.add_argument(self.flags, dest=self.name, help=self.help, **kw)


def add_options(parser, options, groups):
    """Add the command-line ``options`` to ``parser`` in argparse groups, in the order of
    ``groups`` (titles); returns {title: group} for flags declared elsewhere."""
    made, exclusive = {}, {}
    for title in groups:
        made[title] = parser.add_argument_group(title)
    for opt in options:
        if not opt.cli:
            continue
        group = made[opt.group]
        if opt.exclusive:
            if opt.exclusive not in exclusive:
                exclusive[opt.exclusive] = group.add_mutually_exclusive_group()
            group = exclusive[opt.exclusive]
        opt.add_to(group)
    return made


def converted(options, values):
    """``values`` (name -> as given: text, number or None) with each option's conversion
    applied; missing names take the declared default."""
    out = {}
    for opt in options:
        value = values.get(opt.name, opt.default)
        out[opt.name] = opt.convert(value, opt.flags) if opt.convert and value is not None else value
    return out


def problems(options, values):
    """Every message the checks of ``options`` have on ``values`` (converted), in order."""
    msgs = []
    for opt in options:
        if opt.check is None:
            continue
        msg = opt.check(values.get(opt.name, opt.default), values)
        if msg:
            msgs.append(f"{opt.flags}: {msg}")
    return msgs


def checked(options, values):
    """``values`` converted and checked; the first problem raised as one InputError line."""
    values = converted(options, values)
    msgs = problems(options, values)
    if msgs:
        raise InputError(msgs[0])
    return values


def options_class(class_name, options, doc):
    """A dataclass with one field per option (its declared default): a command's options
    as one object an engine function takes."""
    cls = make_dataclass(class_name, [(o.name, object, field(default=o.default)) for o in options])
    cls.__doc__ = doc
    return cls


# ---- conversions --------------------------------------------------------------------------

def _auto_or(value, flag, convert, kind):
    if value is None or str(value) == "auto":
        return None
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag}: '{value}' must be {kind} or auto") from None


def float_or_auto(value, flag):
    """A positive number, or None for 'auto' (the engine chooses: --lr)."""
    number = _auto_or(value, flag, float, "a number")
    if number is not None and not number > 0:
        raise InputError(f"{flag}: {number:g} must be above 0 (or auto)")
    return number


def int_or_auto(value, flag):
    """A positive integer, or None for 'auto' (the engine chooses: --bin, --patch, --batch)."""
    number = _auto_or(value, flag, int, "a positive integer")
    if number is not None and number < 1:
        raise InputError(f"{flag}: {number} must be 1 or more (or auto)")
    return number


def int_list(value, flag):
    """'8,16,24,36' (or a sequence) -> (8, 16, 24, 36)."""
    try:
        out = tuple(int(c) for c in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise InputError(f"{flag}: '{value}' must be comma-separated integers") from None
    if not out or min(out) < 1:
        raise InputError(f"{flag}: '{value}' must be positive integers")
    return out


def k_range(value, flag="--k-range"):
    """'2-20' (or a range) -> range(2, 21)."""
    if isinstance(value, range):
        return value
    try:
        lo, _, hi = str(value).partition("-")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise InputError(f"{flag}: '{value}' is not MIN-MAX (e.g. 2-20)") from None
    if lo < 1 or hi < lo:
        raise InputError(f"{flag}: '{value}' needs 1 <= MIN <= MAX")
    return range(lo, hi + 1)


# ---- checks: check(value, values) -> message or None ----------------------------------------

def at_least(low, what="", strict=False):
    def check(v, _values):
        if v is None:
            return None
        if (v <= low) if strict else (v < low):
            return f"{v:g} must be {'above' if strict else 'at least'} {low:g}{what}"
        return None
    return check


def between(low, high, what="", high_open=False):
    def check(v, _values):
        if v is None:
            return None
        if not (low <= v < high if high_open else low <= v <= high):
            return f"{v:g} must be {what or 'in'} [{low:g}, {high:g}{')' if high_open else ']'}"
        return None
    return check


def positive_voxel_size(v, _values):
    return None if v is None or v > 0 else f"{v:g} must be a positive number of Å"


BOOL = {"action": argparse.BooleanOptionalAction}

# options several commands share, declared here once (their group is "compute" everywhere)
PRECISION = Option("precision", "auto", group="compute", argparse={"choices": ("auto", "fp32", "bf16")},
                   help="arithmetic of the network: auto (default) = bfloat16 on CPUs that compute it natively "
                        "(AVX512-BF16, AMX) and float16 for CUDA inference, float32 elsewhere")
SEED = Option("seed", 0, group="compute", argparse={"type": int}, help="random seed (default 0)")


def to_argv(options, values):
    """The command-line words that give ``values`` (name -> value) to a command: one flag per
    option whose value differs from its declared default (what a protocol hands the engine)."""
    import shlex
    words = []
    for opt in options:
        if not opt.cli or opt.name not in values:
            continue
        value = values[opt.name]
        if value is None or value == opt.default:
            continue
        action = opt.argparse.get("action")
        if action == "store_true":
            words += [opt.flags] if value else []
        elif action == "store_false":
            words += [] if value else [opt.flags]
        elif action is argparse.BooleanOptionalAction:
            words.append(opt.flags if value else "--no-" + opt.flags[2:])
        else:
            text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else f"{value:g}" \
                if isinstance(value, float) else str(value)
            words += [opt.flags, shlex.quote(text)]
    return words
