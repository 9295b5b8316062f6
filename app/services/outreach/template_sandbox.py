"""The sandbox message templates render in, the checks a template passes when it is saved, and
how many SMS segments a text costs.

Templates are written by workspace staff and fed customer data, so two things are kept out: code
(Jinja's `ImmutableSandboxedEnvironment`: no underscore attributes, no mutation of values) and
unbounded work (no macros, includes or imports; no loop inside a loop, so the work is linear in
the data; no string padding or repetition beyond the output limit; every text rendered as a stream
that stops at the limit).
The checks at save refuse what can be refused without data (syntax, unknown variables, unsafe
attributes, forbidden tags); the sandbox refuses the rest at render time, as a `TemplateFailure`."""

import math
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Longest text one field of a template may render to.
RENDERED_LIMIT = 200_000
# No loop inside a loop: two nested loops over a long text (a custom field, a caller's variable)
# run for as long as the square of its length while writing nothing the output cap could stop.
MAX_LOOP_DEPTH = 1
ROOTS = ("customer", "workspace", "vars")
# The names a template may give its own values ({% set %}, loop targets) and Jinja's loop helper.
_BUILT_IN_LOCALS = frozenset({"loop"})
_REFUSED_TAGS: dict[type[nodes.Node], str] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
}
# Methods and attributes of values a template may use; the rest (padding such as `center` and
# `zfill`, `format`, `to_bytes`) could make a short template render gigabytes.
_STR_ATTRIBUTES = frozenset(
    {
        "upper",
        "lower",
        "title",
        "capitalize",
        "casefold",
        "swapcase",
        "strip",
        "lstrip",
        "rstrip",
        "startswith",
        "endswith",
        "split",
        "count",
        "find",
        "isdigit",
        "isalpha",
        "isspace",
    }
)
_DATE_ATTRIBUTES = frozenset({"year", "month", "day", "isoformat", "weekday", "isoweekday"})
_FILTERS = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "reverse",
    "round",
    "sort",
    "string",
    "striptags",
    "sum",
    "title",
    "tojson",
    "trim",
    "truncate",
    "unique",
    "upper",
    "urlencode",
    "wordcount",
)


class TemplateFailure(Exception):
    """A template that cannot render: where (`line`, when known) and why."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def _bounded_replace(eval_ctx: Any, value: str, old: str, new: str, count: int | None = None) -> str:
    """`replace` that refuses to build a text longer than the limit (`"a"|replace("", long)` would)."""
    text = str(value)
    times = text.count(str(old)) if count is None else min(count, text.count(str(old)))
    if len(text) + times * (len(str(new)) - len(str(old))) > RENDERED_LIMIT:
        raise SecurityError(f"replace would make a text longer than {RENDERED_LIMIT} characters")
    replace: Callable[..., str] = FILTERS["replace"]
    return replace(eval_ctx, value, old, new, count)


_bounded_replace.jinja_pass_arg = FILTERS["replace"].jinja_pass_arg  # type: ignore[attr-defined]


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with every name but the template's own variables taken out, a
    short list of filters and attributes, and arithmetic that cannot build a huge value."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=StrictUndefined, finalize=_blank_for_none)
        self.globals.clear()
        self.filters = {name: FILTERS[name] for name in _FILTERS} | {"replace": _bounded_replace}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in _STR_ATTRIBUTES
        if isinstance(obj, date):
            return attr in _DATE_ATTRIBUTES
        if isinstance(obj, bool | int | float | Decimal):
            return False
        return True

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("% formatting is not available in templates; use filters")
        if operator == "**" and _magnitude(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    if len(sequence) * times > RENDERED_LIMIT:
                        raise SecurityError(f"repetition longer than {RENDERED_LIMIT} characters")
        return super().call_binop(context, operator, left, right)


def _magnitude(value: Any) -> float:
    try:
        return abs(float(value))
    except (TypeError, ValueError, OverflowError):
        return math.inf


def _blank_for_none(value: Any) -> Any:
    """A field the customer has not filled (a company, a birthday) prints as nothing, not `None`."""
    return "" if value is None else value


TEXT_SANDBOX = TemplateSandbox(autoescape=False)
HTML_SANDBOX = TemplateSandbox(autoescape=True)


class Record:
    """A group of variables (`customer`, `customer.value`, `vars`): its names as attributes and
    items, and nothing else, so a custom field called `items` or `keys` is that field and not a
    method of a dict."""

    __slots__ = ("_values",)
    # Named in error messages as "'Record object' has no attribute ...", not by its module path.
    __module__ = "builtins"

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]


@dataclass(frozen=True)
class TemplateProblem:
    """One thing wrong with a template text, found at save."""

    message: str
    kind: str
    line: int | None = None
    variable: str | None = None


@dataclass(frozen=True)
class Checked:
    """A template text that parsed, and the variable paths it names (`customer.name`, ...)."""

    paths: frozenset[str]
    problems: tuple[TemplateProblem, ...]


def check(source: str, known: Callable[[tuple[str, ...]], str | None], *, html: bool = False) -> Checked:
    """Parse `source` and check every variable it names. `known(path)` answers None for a path a
    template may use (a field, or an attribute of one), else why not."""
    sandbox = HTML_SANDBOX if html else TEXT_SANDBOX
    try:
        tree = sandbox.parse(source)
        walker = _Walker(known, _assigned_names(tree))
        walker.visit(tree, loop_depth=0)
        # Compiled here too: Python refuses code nested past its own limits, which only the
        # compiled template reaches, and a saved template must render.
        sandbox.compile(source)
    except TemplateSyntaxError as exc:
        problem = TemplateProblem(f"Template syntax error: {exc.message}", "template_syntax", exc.lineno)
        return Checked(frozenset(), (problem,))
    except (RecursionError, SyntaxError, MemoryError):
        problem = TemplateProblem("The template nests expressions or tags too deeply.", "template_syntax")
        return Checked(frozenset(), (problem,))
    return Checked(frozenset(walker.paths), tuple(walker.problems))


def _assigned_names(tree: nodes.Template) -> frozenset[str]:
    """Names the template assigns itself anywhere (set, for, with): not checked against the catalogue."""
    names = {name.name for name in tree.find_all(nodes.Name) if name.ctx in ("store", "param")}
    return frozenset(names | _BUILT_IN_LOCALS)


class _Walker:
    def __init__(self, known: Callable[[tuple[str, ...]], str | None], local: frozenset[str]) -> None:
        self.known, self.local = known, local
        self.paths: set[str] = set()
        self.problems: list[TemplateProblem] = []

    def visit(self, node: nodes.Node, *, loop_depth: int) -> None:
        line = getattr(node, "lineno", None)
        for refused, tag in _REFUSED_TAGS.items():
            if isinstance(node, refused):
                self.problems.append(
                    TemplateProblem(f"The {tag} tag is not available in message templates.", "tag", line)
                )
                return
        if isinstance(node, nodes.For):
            if loop_depth >= MAX_LOOP_DEPTH:
                self.problems.append(TemplateProblem("A loop may not contain another loop.", "loop_depth", line))
                return
            # The target and the iterable are outside the loop; the body and `else` inside it.
            for part in (node.target, node.iter, *([node.test] if node.test else [])):
                self.visit(part, loop_depth=loop_depth)
            for part in (*node.body, *node.else_):
                self.visit(part, loop_depth=loop_depth + 1)
            return
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            attribute = node.attr if isinstance(node, nodes.Getattr) else _constant_key(node)
            if attribute is not None and attribute.startswith("_"):
                self.problems.append(TemplateProblem(f"The attribute {attribute!r} is not available.", "unsafe", line))
                return
        if isinstance(node, nodes.Name | nodes.Getattr | nodes.Getitem) and self._variable(node):
            return
        for child in node.iter_child_nodes():
            self.visit(child, loop_depth=loop_depth)

    def _variable(self, node: nodes.Expr) -> bool:
        """Check a chain `root.a.b` or `root["a"]` once, as a whole; True when it was one (its
        dynamic subscripts are visited by the caller's walk of the children otherwise)."""
        chain: list[str] = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            key = current.attr if isinstance(current, nodes.Getattr) else _constant_key(current)
            if key is None:
                return False
            chain.append(key)
            current = current.node
        if not isinstance(current, nodes.Name) or current.ctx != "load":
            return False
        if current.name in self.local and current.name not in ROOTS:
            return True
        path = (current.name, *reversed(chain))
        dotted = ".".join(path)
        if current.name not in ROOTS:
            self.problems.append(
                TemplateProblem(f"Unknown variable {current.name!r}.", "unknown_variable", node.lineno, current.name)
            )
            return True
        why = self.known(path)
        if why is not None:
            self.problems.append(TemplateProblem(why, "unknown_variable", node.lineno, dotted))
            return True
        self.paths.add(dotted)
        return True


def _constant_key(node: nodes.Getitem) -> str | None:
    return node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None


def _any_path(_path: tuple[str, ...]) -> None:
    return None


@lru_cache(maxsize=1024)
def used_paths(source: str, *, html: bool) -> frozenset[str]:
    """The variable paths a saved text names, as `check` finds them, once per process."""
    return check(source, _any_path, html=html).paths


@lru_cache(maxsize=512)
def compiled(source: str, *, html: bool, field: str) -> Any:
    """The template of a text that passed `check`, compiled once per process."""
    sandbox = HTML_SANDBOX if html else TEXT_SANDBOX
    code = sandbox.compile(source, name=field, filename=f"<{field}>")
    return sandbox.template_class.from_code(sandbox, code, sandbox.make_globals(None), None)


def render(source: str, values: Mapping[str, Any], *, html: bool, field: str) -> str:
    """Render one text, streamed so that it stops at the output limit, or raise `TemplateFailure`
    with the line the error was on."""
    template = compiled(source, html=html, field=field)
    parts: list[str] = []
    size = 0
    try:
        chunks: Iterator[str] = template.generate(values)
        for chunk in chunks:
            size += len(chunk)
            if size > RENDERED_LIMIT:
                raise TemplateFailure(f"The {field} renders longer than {RENDERED_LIMIT} characters.")
            parts.append(chunk)
    except TemplateFailure:
        raise
    except TemplateError as exc:
        raise TemplateFailure(_message(exc), line=_line(exc, field)) from None
    # The template runs code its authors wrote over values customers wrote: whatever that code
    # raises (1/0, "a" + 1, a recursion) is that template's error, not the service's.
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError) as exc:
        raise TemplateFailure(f"{type(exc).__name__}: {exc}", line=_line(exc, field)) from None
    return "".join(parts)


def _message(exc: TemplateError) -> str:
    kind = "Not allowed" if isinstance(exc, SecurityError) else "Cannot render"
    return f"{kind}: {exc.message or type(exc).__name__}"


def _line(exc: BaseException, field: str) -> int | None:
    """The template line the error was raised on: Jinja rewrites the traceback so that template
    frames carry the template's file name and line."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == f"<{field}>"]
    return lines[-1] if lines else None


# GSM 03.38: the basic set counts one septet a character, the extension set two.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsSize:
    characters: int
    encoding: Literal["gsm7", "ucs2"]
    segments: int


def sms_size(text: str) -> SmsSize:
    """How a phone network counts `text`: GSM-7 when every character is in the GSM alphabet (160 a
    message, 153 each when concatenated), else UCS-2 (70, 67 each when concatenated; a character
    outside the BMP, an emoji, takes two)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in text):
        units = sum(2 if c in _GSM_EXTENSION else 1 for c in text)
        return SmsSize(len(text), "gsm7", 1 if units <= 160 else math.ceil(units / 153))
    units = len(text.encode("utf-16-le")) // 2
    return SmsSize(len(text), "ucs2", 1 if units <= 70 else math.ceil(units / 67))
