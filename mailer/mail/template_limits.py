"""How much work one render of a template may do: the sandbox stops escapes, this stops work.

Campaign subjects and bodies are typed by staff into the console, and a render runs in the
daemon's process: `{% for a in range(8000) %}{% for b in range(8000) %}` or
`{{ ('x' * 50000000)|length }}` must be refused, not run. Every render (`Sandbox.render`) gets
a `Budget` from its `Limits`:

- **operations**: loop iterations, calls (macros included), filters, operators and values
  written out, all counted together; past `operations`, the render stops;
- **size**: no value a template makes (by `*`, `+`, `%`, `~`, a filter, a call such as
  `str.center`) may be longer than `size` characters or items, and that is checked *before*
  the value is made where the size can be known beforehand (`'x' * 10**10` never allocates);
  the values written out together may not pass `output`;
- **time**: past `time_s` the render stops, checked after every filter, call and operator and
  every few hundred loop iterations. Work that is bounded but slow (each step on values up to
  `size`) ends here rather than freezing the process.

The hooks are the sandbox's own (`call`, `call_binop`, `finalize`, the filter table) and one
rewrite of the parsed template (`bound_tree`): each `{% for %}` iterates through
`environment.bounded_iter`, each `~` is measured by `environment.bounded`. A limit that is
passed raises `LimitExceeded` (a Jinja2 SecurityError, so the sandbox's translation names the
template and line), `TooSlow` for the time limit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

__all__ = [
    "PAGE_LIMITS",
    "Budget",
    "LimitExceeded",
    "Limits",
    "TooSlow",
    "bound_filters",
    "bound_tree",
    "budget_of",
    "finalize",
]


@dataclass(frozen=True)
class Limits:
    """What one render may do. The defaults are far above any email or page we write (a
    campaign renders in tens of microseconds) and far below what would stall the daemon."""

    operations: int = 200_000
    # Characters of a string, items of a list. Also what bounds one step: the slowest filters
    # (urlize, sort, groupby) take about 0.3 s on a value this long.
    size: int = 100_000
    output: int = 1_000_000  # characters written by one render, all values together
    time_s: float = 1.0
    int_bits: int = 65_536  # integers made by * and ** (a 20,000-digit number)


# For our own page templates (the listeners') over stored data, such as a review item's text
# (up to `[imap] max_message_bytes`): a backstop against a runaway page, not a budget.
PAGE_LIMITS = Limits(operations=5_000_000, size=50_000_000, output=100_000_000, time_s=10.0)


class LimitExceeded(SecurityError):
    """A render tried to do more than its `Limits` allow."""


class TooSlow(LimitExceeded):
    """A render ran past its time limit."""


_CHECK_TIME_EVERY = 256  # operations (a power of two: checked with a mask)
# A number this long in a format string is a field width of a million or more.
_WIDE_FORMAT = re.compile(r"\d{7,}")


class Budget:
    """What is left of one render's `Limits`."""

    __slots__ = ("deadline", "limits", "operations", "output")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.operations = limits.operations
        self.output = limits.output
        self.deadline = time.monotonic() + limits.time_s

    def tick(self) -> None:
        """Count one operation; stop the render past the count or the time limit."""
        self.operations -= 1
        if self.operations & (_CHECK_TIME_EVERY - 1) == 0:
            self.check()

    def step(self) -> None:
        """Count one operation that may itself take a while (a filter, a call, an operator
        on a long value): the time is checked after every one of them."""
        self.operations -= 1
        self.check()

    def check(self) -> None:
        """Stop the render past the count of operations or the time limit."""
        if self.operations < 0:
            raise LimitExceeded(
                f"more than {self.limits.operations:,} operations (loop iterations, calls, "
                "filters); make the template do less")
        if time.monotonic() > self.deadline:
            raise TooSlow(f"rendering took longer than {self.limits.time_s:g} s")

    def size(self, size: int, what: str) -> None:
        """Refuse to make a value of `size` characters or items."""
        if size > self.limits.size:
            raise LimitExceeded(f"{what} would be longer than the limit of "
                                f"{self.limits.size:,} characters or items")

    def wrote(self, value: Any) -> None:
        """Count the length of a value written out; stop past the output limit."""
        if isinstance(value, str):
            self.output -= len(value)
        elif isinstance(value, list | tuple | dict | set | frozenset):
            self.output -= weight(value, self.limits.size)
        if self.output < 0:
            raise LimitExceeded(f"the output would be longer than {self.limits.output:,} "
                                "characters")


_CURRENT: ContextVar[Budget | None] = ContextVar("template budget", default=None)


def budget_of(limits: Limits) -> Callable[[], Budget]:
    """A function for the hooks: the budget of the render in progress, or a fresh one for a
    template rendered outside `Sandbox.render` (each hook then bounds its own work)."""
    get = _CURRENT.get

    def budget() -> Budget:
        return get() or Budget(limits)

    return budget


def finalize() -> Callable[[Any], Any]:
    """The environment's `finalize`, which Jinja2 calls with every value written out: one
    operation, and its length counted against the output limit. Inlined, as it runs for
    every `{{ }}` of every recipient; outside `Sandbox.render` it counts nothing."""
    get = _CURRENT.get
    mask = _CHECK_TIME_EVERY - 1

    def written(value: Any) -> Any:
        budget = get()
        if budget is None:
            return value
        budget.operations -= 1
        if budget.operations & mask == 0:
            budget.check()
        if type(value) is str:
            budget.output -= len(value)
            if budget.output < 0:
                budget.wrote("")
        else:
            budget.wrote(value)
        return value

    return written


def start(limits: Limits) -> Any:
    """Start a render's budget; hand the token to `end`."""
    return _CURRENT.set(Budget(limits))


def end(token: Any) -> None:
    _CURRENT.reset(token)


def weight(value: Any, limit: int) -> int:
    """About how long `value` is once written out (its characters, or its items' added up),
    stopping early once past `limit`."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        total = len(value)
        for item in value:
            if total > limit:
                break
            total += weight(item, limit - total) if not isinstance(item, int | float) else 8
        return total
    return len(value) if isinstance(value, Sized) else 8


def check_made(budget: Budget, value: Any, what: str) -> Any:
    """Refuse a value longer than the size limit (after it is made)."""
    if isinstance(value, str | list | tuple | dict | set | frozenset | bytes):
        budget.size(len(value), what)
    elif isinstance(value, int) and value.bit_length() > budget.limits.int_bits:
        raise LimitExceeded(f"{what} made a number of more than "
                            f"{budget.limits.int_bits:,} bits")
    return value


def check_args(budget: Budget, args: Iterable[Any], what: str) -> None:
    """Refuse integer arguments past the size limit (a width, a count, a range)."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > budget.limits.size:
            raise LimitExceeded(f"{what}: the number {arg:,} is more than the limit of "
                                f"{budget.limits.size:,}")


def check_format(budget: Budget, template: str, what: str) -> None:
    """Refuse a format string with a field width of a million or more (`{:>999999999}`)."""
    if _WIDE_FORMAT.search(template):
        raise LimitExceeded(f"{what}: a field width of a million or more")


def before_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    """Refuse `left operator right` when its result would pass a limit, before making it."""
    budget.step()
    limit_bits = budget.limits.int_bits
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                budget.size(len(seq) * max(times, 0), "a repeated value")
        if isinstance(left, int) and isinstance(right, int) \
                and left.bit_length() + right.bit_length() > limit_bits:
            raise LimitExceeded(f"a product of more than {limit_bits:,} bits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0 \
                and left.bit_length() * right > limit_bits:
            raise LimitExceeded(f"a power of more than {limit_bits:,} bits")
    elif operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            budget.size(len(left) + len(right), "a joined value")
    elif operator == "%" and isinstance(left, str):
        check_format(budget, left, "a % format")
        check_args(budget, right if isinstance(right, tuple) else (right,), "a % format")


def before_call(budget: Budget, obj: Any, args: tuple[Any, ...],
                kwargs: Mapping[str, Any]) -> None:
    """Refuse a call whose result would pass a limit, where that can be known first."""
    budget.step()
    name = getattr(obj, "__name__", "a call")
    check_args(budget, (*args, *kwargs.values()), f"{name}()")
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str):
        return
    if name in ("format", "format_map"):
        check_format(budget, owner, f"{name}()")
    elif name == "join" and args:
        items = args[0]
        count = len(items) if isinstance(items, Sized) else 0
        budget.size(weight(items, budget.limits.size) + len(owner) * count, "join()")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) \
            and isinstance(args[1], str):
        found = owner.count(args[0]) if args[0] else len(owner) + 1
        budget.size(len(owner) + found * len(args[1]), "replace()")


# What a filter's result may grow to, from its value and arguments, where a filter can make
# far more than it is given (the others are checked after, and their numbers before).
def _replace_size(value: Any, old: Any = "", new: Any = "", *_: Any, **__: Any) -> int:
    text, old, new = str(value), str(old), str(new)
    return len(text) + (text.count(old) if old else len(text) + 1) * len(new)


def _join_size(value: Any, d: Any = "", *_: Any, **__: Any) -> int:
    count = len(value) if isinstance(value, Sized) else 0
    return weight(value, 10**12) + len(str(d)) * count


def _indent_size(value: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    text = str(value)
    columns: int = len(width) if isinstance(width, str) else int(width)
    return len(text) + (text.count("\n") + 1) * max(columns, 0)


def _wordwrap_size(value: Any, width: Any = 79, break_long_words: Any = True,
                   wrapstring: Any = None, *_: Any, **__: Any) -> int:
    text = str(value)
    return len(text) * (1 + len(str(wrapstring or "\n")))


def _center_size(value: Any, width: Any = 80, *_: Any, **__: Any) -> int:
    return max(len(str(value)), int(width))


_GROWTH: Mapping[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": _join_size,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "center": _center_size,
}


def bound_filters(filters: Mapping[str, Any],
                  budget_of: Callable[[], Budget]) -> dict[str, Any]:
    """The filter table with every filter counted and its result bounded."""
    return {name: _bounded_filter(name, f, budget_of) for name, f in filters.items()}


def _bounded_filter(name: str, function: Callable[..., Any],
                    budget_of: Callable[[], Budget]) -> Callable[..., Any]:
    skip = 1 if _PassArg.from_obj(function) is not None else 0
    growth = _GROWTH.get(name)
    what = f"the {name} filter"

    @wraps(function)  # keeps jinja_pass_arg, so Jinja2 still passes the context first
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = budget_of()
        budget.step()
        given = args[skip:]
        check_args(budget, (*given[1:], *kwargs.values()), what)
        if given and isinstance(given[0], list | tuple | dict | set | frozenset):
            budget.size(weight(given[0], budget.limits.size), what)
        if name == "format" and given and isinstance(given[0], str):
            check_format(budget, given[0], what)
        if growth is not None and given:
            budget.size(growth(*given, **kwargs), what)
        return check_made(budget, function(*args, **kwargs), what)

    return bounded


def bounded_iter(budget: Budget, iterable: Iterable[Any]) -> Iterator[Any]:
    """`iterable`, one operation per item."""
    for item in iterable:
        budget.tick()
        yield item


class _Bound(NodeTransformer):
    """Route every `{% for %}` through `environment.bounded_iter` and measure every `~`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        assert isinstance(node.iter, nodes.Expr)
        node.iter = _env_call("bounded_iter", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("bounded", node)


def _env_call(method: str, arg: nodes.Expr) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(method), [arg], [], None, None)
    call.set_lineno(arg.lineno)
    return call


def bound_tree(tree: nodes.Template) -> nodes.Template:
    """The parsed template with its loops and concatenations bounded (see module docstring)."""
    result = _Bound().visit(tree)
    assert isinstance(result, nodes.Template)
    return result
