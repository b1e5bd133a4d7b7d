"""Policy conditions: a small, safe expression language, parsed once, type-checked and compiled to closures.

A condition such as `args.assets > 25% * state.vault.totalAssets` is read by a hand-written tokenizer and
recursive-descent parser (never eval, exec or Python's ast: anything outside the grammar is an error at load),
checked against a schema of the fields it may read, and turned into nested closures that evaluate it against
a context of nested mappings. Numbers are exact (int and fractions.Fraction, never float), because EVM values
are uint256 and a rounded comparison is a wrong verdict.

Grammar, loosest binding first:
    or          := and ('or' and)*
    and         := not ('and' not)*
    not         := 'not' not | comparison
    comparison  := bitor [('==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'not' 'in') bitor]   (no chaining)
    bitor       := bitand ('|' bitand)*
    bitand      := shift ('&' shift)*
    shift       := additive (('<<' | '>>') additive)*
    additive    := multiplicative (('+' | '-') multiplicative)*
    multiplicative := unary (('*' | '/') unary)*
    unary       := '-' unary | primary
    primary     := NUMBER ['%'] | STRING | HEX | 'true' | 'false' | path | READ
                 | ('abs' | 'min' | 'max') '(' or (',' or)* ')' | '(' or ')' | '[' [or (',' or)* [',']] ']'
    path        := NAME ('.' NAME)*
    READ        := [NAME '.'] NAME '(' … ')' ('.' NAME)*   only where the caller resolves reads (an action's
                   done_when): a view call on a watched contract (and a field of what it returns), its text handed to
                   the caller
NUMBER: 1000, 1_000_000e18, 1.5e18, 0.25 (exact; below 2**256). STRING: '...' or "..." without escapes.
HEX: 0x and whole bytes, lower-cased; exactly 40 hex digits is an address, anything else bytes.
NAME: [A-Za-z_][A-Za-z0-9_]* not starting with '_'. Types: number, address, bool, string, bytes.
Bit operators (`>>`, `<<`, `&`, `|`) take whole, non-negative numbers (packed flags in a uint256) and bind as in
Python: tighter than comparisons, looser than + and -, so `(config >> 60) & 1 == 1` needs no more parentheses.
"""

from __future__ import annotations

import difflib
import keyword
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any, NamedTuple, Union

from onguard.errors import OnguardError, PolicyError

TYPES = ("number", "address", "bool", "string", "bytes")
FUNCTIONS = ("abs", "max", "min")
KEYWORDS = ("and", "or", "not", "in", "true", "false")

# Parentheses, lists, calls, `not` and `-` inside each other: each level costs ~9 parser frames, and a policy
# never needs more than a handful, so this keeps a hostile file from exhausting Python's recursion limit.
MAX_NESTING = 40
# Depth of the parsed tree (long `a + b + c ...` chains included): compiling, evaluating and rendering recurse
# over it, so it is bounded well below Python's recursion limit.
MAX_DEPTH = 100
# A literal has at most this many digits and this exponent: uint256 needs 78 digits, and a 10**(10**9) would
# stall the loader.
_MAX_DIGITS = 100
_MAX_EXPONENT = 100
_UINT256_LIMIT = 2**256

Number = Union[int, Fraction]
Context = Mapping[str, Any]
ReadResolver = Callable[[str], str]  # an inline read's text -> its type
READ_VALUES = "()"  # the context key holding inline reads' values; no field name can be it
_Fn = Callable[[Any], Any]

_NUMBER_HINT = "write numbers like 1000, 1_000_000, 0.25, 1.5e18 or 25%"
_NAME_HINT = "field names start with a letter, as in args.assets or state.vault.totalAssets"


class ExpressionError(PolicyError):
    """A condition that cannot be compiled: a syntax, field or type error at a position in its source.

    The message shows the source with a caret line under the offending text; `bare_message` is the message
    alone and `position` the 0-based offset, for callers that re-raise with the policy file and field.
    """

    def __init__(self, message: str, *, source: str, position: int, length: int = 1, hint: str | None = None,
                 file: str | None = None, field: str | None = None) -> None:
        self.bare_message = message
        self.source = source
        self.position = position
        self.length = length
        super().__init__(f"{message} ({_where(source, position)})\n{_underline(source, position, length)}",
                         file=file, field=field, hint=hint)

    @property
    def line(self) -> int:
        """1-based line of the position (conditions may span lines in TOML multi-line strings)."""
        return self.source.count("\n", 0, self.position) + 1

    @property
    def column(self) -> int:
        """1-based column of the position within its line."""
        return self.position - (self.source.rfind("\n", 0, self.position) + 1) + 1

    def with_location(self, file: str | None = None, field: str | None = None) -> ExpressionError:
        """The same error, prefixed with the policy file and field the condition came from."""
        return ExpressionError(self.bare_message, source=self.source, position=self.position, length=self.length,
                               hint=self.hint, file=file, field=field)


class EvaluationError(OnguardError):
    """A compiled condition could not be evaluated on this context: a missing field, a value of the wrong type,
    or a division by zero."""


def _where(source: str, position: int) -> str:
    line = source.count("\n", 0, position) + 1
    column = position - (source.rfind("\n", 0, position) + 1) + 1
    return f"line {line}, column {column}" if "\n" in source.strip() else f"column {column}"


def _underline(source: str, position: int, length: int) -> str:
    start = source.rfind("\n", 0, position) + 1
    end = source.find("\n", position)
    line = source[start:] if end < 0 else source[start:end]
    column = position - start
    # Tabs are copied so the caret lines up whatever the terminal's tab width.
    pad = "".join(ch if ch == "\t" else " " for ch in line[:column])
    width = max(1, min(length, len(line) - column))
    return f"  {line}\n  {pad}{'^' * width}"


# ---- tokens ----

class _Token(NamedTuple):
    kind: str        # "number", "string", "hex", "name", "op", "end", or "error" (value: the ExpressionError)
    text: str        # as written
    position: int
    value: Any = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A run of characters that could belong to a number, checked against _NUMBER as a whole, so `10ether`, `1.5.3`
# and `1__0` are rejected as one malformed number rather than split into confusing pieces.
_NUMBER_RUN = re.compile(r"[0-9](?:[0-9A-Za-z_.]|(?<=[eE])[+-])*")
_NUMBER = re.compile(r"(?P<whole>[0-9](?:_?[0-9])*)(?:\.(?P<fraction>[0-9](?:_?[0-9])*))?"
                     r"(?:[eE](?P<exponent>[+-]?[0-9]+))?")
_HEX_RUN = re.compile(r"0[xX][0-9A-Za-z_]*")
_HEX_VALUE = re.compile(r"0[xX][0-9a-fA-F]*")
_OPERATORS_2 = ("==", "!=", "<=", ">=", "<<", ">>")
_OPERATORS_1 = "<>+-*/%()[],.&|"
# An inline read (only where the caller resolves reads): [contract.]function( … the matching ')'.
_READ_START = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]*)[ \t]*\.[ \t]*)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(")
# Things people write from other languages, with what to write instead.
_MISTAKES = {
    "&&": "write and", "||": "write or", "**": "there is no power operator; write 1e18, or multiply",
    "//": "there is no integer division: / is exact", "<>": "write !=", "=>": "write >=", "=<": "write <=",
    "=": "write == to compare", "!": "write not, or != to compare",
    "^": "there is no power or xor operator; write 1e18 for powers of ten",
    "~": "there is no bit negation; test a bit with (x >> n) & 1 == 0",
    "≥": "write >=", "≤": "write <=", "≠": "write !=", "“": "use plain quotes", "”": "use plain quotes",
    "‘": "use plain quotes", "’": "use plain quotes",
}


def _tokenize(source: str, reads: bool = False) -> list[_Token]:
    """All tokens; a lexical error becomes a final "error" token, so that the parser reports whatever comes
    first in the source (`lambda x: x` is about `lambda`, not about the ':'). With `reads`, a
    `contract.function(…)` is one "read" token, its text left for the caller to resolve."""
    tokens: list[_Token] = []
    try:
        for token in _scan(source, reads):
            tokens.append(token)
    except ExpressionError as exc:
        tokens.append(_Token("error", "", exc.position, exc))
    return tokens


def _scan(source: str, reads: bool) -> Iterator[_Token]:
    position = 0
    while position < len(source):
        ch = source[position]
        if ch in " \t\r\n":
            position += 1
            continue
        if ch == "0" and source[position + 1:position + 2] in ("x", "X"):
            token = _hex(source, position)
        elif "0" <= ch <= "9":
            token = _number(source, position)
        elif ch in ("'", '"'):
            token = _string(source, position)
        elif reads and _is_read(source, position):
            token = _read(source, position)
        elif ch == "_" or ch.isascii() and ch.isalpha():
            name = _NAME.match(source, position)
            assert name is not None
            token = _Token("name", name.group(), position)
        elif source[position:position + 2] in _OPERATORS_2:
            token = _Token("op", source[position:position + 2], position)
        elif source[position:position + 2] in _MISTAKES:
            text = source[position:position + 2]
            raise _error(source, f"unexpected {text!r}", position, 2, _MISTAKES[text])
        elif ch in _OPERATORS_1:
            token = _Token("op", ch, position)
        else:
            hint = _MISTAKES.get(ch, "only numbers, quoted strings, 0x… values, field names, operators, "
                                     "parentheses and lists are allowed")
            raise _error(source, f"unexpected character {ch!r}", position, 1, hint)
        yield token
        position += len(token.text)
    yield _Token("end", "", len(source))


def _number(source: str, position: int) -> _Token:
    run = _NUMBER_RUN.match(source, position)
    assert run is not None
    text = run.group()
    parts = _NUMBER.fullmatch(text)
    if parts is None:
        raise _error(source, f"malformed number {text!r}", position, len(text), _NUMBER_HINT)
    whole = parts["whole"].replace("_", "")
    fraction = (parts["fraction"] or "").replace("_", "")
    exponent = int(parts["exponent"] or 0)
    if len(whole) + len(fraction) > _MAX_DIGITS or abs(exponent) > _MAX_EXPONENT:
        raise _error(source, f"number {text!r} is out of range", position, len(text), "a uint256 is below 2**256")
    shift = exponent - len(fraction)
    mantissa = int(whole + fraction)
    value = _whole(Fraction(mantissa * 10**shift) if shift >= 0 else Fraction(mantissa, 10**-shift))
    if value >= _UINT256_LIMIT:
        raise _error(source, f"number {text!r} is out of range", position, len(text),
                     "a uint256 is at most 2**256 - 1 (about 1.16e77)")
    return _Token("number", text, position, value)


def _hex(source: str, position: int) -> _Token:
    run = _HEX_RUN.match(source, position)
    assert run is not None
    text = run.group()
    for offset, ch in enumerate(text[2:], start=2):
        if ch not in "0123456789abcdefABCDEF":
            raise _error(source, f"{ch!r} is not a hex digit", position + offset, 1,
                         "an address is 0x followed by 40 hex digits (0-9, a-f)")
    digits = len(text) - 2
    if digits % 2:
        raise _error(source, f"{text} has an odd number of hex digits ({digits})", position, len(text),
                     "an address is 0x followed by exactly 40 hex digits; bytes need two digits each")
    return _Token("hex", text, position, "0x" + text[2:].lower())


_READ_FIELDS = re.compile(r"(?:[ \t]*\.[ \t]*[A-Za-z_][A-Za-z0-9_]*)*")  # a named output or struct field


def _is_read(source: str, position: int) -> bool:
    start = _READ_START.match(source, position)
    return start is not None and (start.group(1) is not None or start.group(2) not in FUNCTIONS + KEYWORDS)


def _read(source: str, position: int) -> _Token:
    """`[contract.]function(args)` up to its matching parenthesis (quoted text skipped), as one token."""
    start = _READ_START.match(source, position)
    assert start is not None
    name = f"{start.group(1)}.{start.group(2)}" if start.group(1) else start.group(2)
    opening = start.end() - 1
    depth = 0
    index = opening
    quote = None
    while index < len(source):
        ch = source[index]
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                fields = _READ_FIELDS.match(source, index + 1)
                assert fields is not None  # it matches the empty string
                return _Token("read", source[position:fields.end()], position,
                              f"{name}({source[opening + 1:index].strip()})" + re.sub(r"\s", "", fields.group()))
        index += 1
    raise _error(source, "missing ')'", opening, 1, "the read's argument list is never closed")


def _string(source: str, position: int) -> _Token:
    quote = source[position]
    index = position + 1
    while index < len(source):
        ch = source[index]
        if ch == quote:
            return _Token("string", source[position:index + 1], position, source[position + 1:index])
        if ch == "\\":
            raise _error(source, "escape sequences are not supported in strings", index, 2,
                         "to include a quote, wrap the string in the other kind: \"it's\" or 'say \"hi\"'")
        if ch == "\n":
            break
        index += 1
    raise _error(source, "unterminated string", position, 1, f"close it with {quote} on the same line")


def _error(source: str, message: str, position: int, length: int = 1, hint: str | None = None) -> ExpressionError:
    return ExpressionError(message, source=source, position=position, length=length, hint=hint)


def _whole(value: Fraction) -> Number:
    """An int when the fraction is whole, so later arithmetic stays on Python's fast int path."""
    return value.numerator if value.denominator == 1 else value


# ---- the parsed tree ----

@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any        # int or Fraction, bool, str, or a lower-cased 0x… str for address and bytes
    type: str
    text: str         # canonical spelling
    position: int
    length: int


@dataclass(frozen=True, slots=True)
class _Path:
    parts: tuple[str, ...]
    position: int
    length: int

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[_Node, ...]
    position: int
    length: int


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[_Node, ...]
    position: int
    length: int = 1


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str           # "-" or "not"
    operand: _Node
    position: int
    length: int


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str           # + - * / << >> & | == != < <= > >= in "not in"
    left: _Node
    right: _Node
    position: int     # of the operator, where type errors point
    length: int


@dataclass(frozen=True, slots=True)
class _Logical:
    op: str           # "and" or "or"; n-ary, so long allowlists of `or` do not make a deep tree
    operands: tuple[_Node, ...]
    positions: tuple[int, ...]  # of each operator, between operands[i] and operands[i + 1]

    @property
    def position(self) -> int:
        return self.positions[0]

    @property
    def length(self) -> int:
        return len(self.op)


@dataclass(frozen=True, slots=True)
class _Read:
    text: str         # contract.function(args), arguments as written: the key its value is given under
    position: int
    length: int


_Node = Union[_Literal, _Path, _Read, _Call, _List, _Unary, _Binary, _Logical]

_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _Unary):
        return (node.operand,)
    if isinstance(node, _Binary):
        return (node.left, node.right)
    if isinstance(node, _Logical):
        return node.operands
    if isinstance(node, _Call):
        return node.args
    if isinstance(node, _List):
        return node.items
    return ()


# ---- parser ----

class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, source: str, reads: bool = False) -> None:
        self.source = source
        self.tokens = _tokenize(source, reads)
        self.index = 0
        self.nesting = 0

    def parse(self) -> _Node:
        if self._peek().kind == "end":
            raise self._fail("empty expression", 0, hint="write a condition such as args.assets > 0")
        node = self._or()
        token = self._peek()
        if token.kind != "end":
            raise self._unexpected_after(token)
        self._check_depth(node)
        return node

    # -- helpers --

    def _peek(self, ahead: int = 0) -> _Token:
        token = self.tokens[min(self.index + ahead, len(self.tokens) - 1)]
        if token.kind == "error":
            raise token.value
        return token

    def _next(self) -> _Token:
        token = self._peek()
        self.index += 1
        return token

    def _at(self, kind: str, *texts: str, ahead: int = 0) -> bool:
        token = self._peek(ahead)
        return token.kind == kind and (not texts or token.text in texts)

    def _fail(self, message: str, position: int, length: int = 1, hint: str | None = None) -> ExpressionError:
        return _error(self.source, message, position, length, hint)

    def _enter(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self._fail(f"expression is nested too deeply (more than {MAX_NESTING} levels)", token.position,
                             hint="split it into simpler conditions")

    def _check_depth(self, root: _Node) -> None:
        stack = [(root, 1)]
        while stack:  # iterative: the point is to refuse trees too deep to recurse over
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise self._fail(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node.position,
                                 hint="split it into simpler conditions")
            stack.extend((child, depth + 1) for child in _children(node))

    def _is_comparison(self) -> bool:
        return (self._at("op", *_COMPARISONS) or self._at("name", "in")
                or self._at("name", "not") and self._at("name", "in", ahead=1))

    # -- rules --

    def _or(self) -> _Node:
        return self._logical("or", self._and)

    def _and(self) -> _Node:
        return self._logical("and", self._not)

    def _logical(self, op: str, operand: Callable[[], _Node]) -> _Node:
        operands = [operand()]
        positions = []
        while self._at("name", op):
            positions.append(self._next().position)
            operands.append(operand())
        return operands[0] if len(operands) == 1 else _Logical(op, tuple(operands), tuple(positions))

    def _not(self) -> _Node:
        if not self._at("name", "not"):
            return self._comparison()
        token = self._next()
        self._enter(token)
        operand = self._not()
        self.nesting -= 1
        return _Unary("not", operand, token.position, 3)

    def _comparison(self) -> _Node:
        left = self._bitor()
        if not self._is_comparison():
            return left
        token = self._next()
        op = token.text
        length = len(op)
        if op == "not":
            length = self._next().position + 2 - token.position
            op = "not in"
        right = self._bitor()
        if self._is_comparison():
            chained = self._peek()
            raise self._fail("comparisons cannot be chained", chained.position, len(chained.text),
                             hint="write a < b and b < c, or use parentheses if you mean to compare a bool")
        return _Binary(op, left, right, token.position, length)

    def _bitor(self) -> _Node:
        return self._chain(("|",), self._bitand)

    def _bitand(self) -> _Node:
        return self._chain(("&",), self._shift)

    def _shift(self) -> _Node:
        return self._chain(("<<", ">>"), self._additive)

    def _additive(self) -> _Node:
        return self._chain(("+", "-"), self._multiplicative)

    def _multiplicative(self) -> _Node:
        return self._chain(("*", "/"), self._unary)

    def _chain(self, ops: tuple[str, ...], operand: Callable[[], _Node]) -> _Node:
        node = operand()
        while self._at("op", *ops):
            token = self._next()
            node = _Binary(token.text, node, operand(), token.position, len(token.text))
        return node

    def _unary(self) -> _Node:
        if not self._at("op", "-"):
            return self._primary()
        token = self._next()
        self._enter(token)
        operand = self._unary()
        self.nesting -= 1
        return _Unary("-", operand, token.position, 1)

    def _primary(self) -> _Node:
        token = self._peek()
        if token.kind == "number":
            self._next()
            if self._at("op", "%"):
                percent = self._next()
                return _Literal(_whole(Fraction(token.value) / 100), "number", token.text.lower() + "%",
                                token.position, percent.position + 1 - token.position)
            return _Literal(token.value, "number", token.text.lower(), token.position, len(token.text))
        if token.kind == "string":
            self._next()
            return _Literal(token.value, "string", _quote(token.value), token.position, len(token.text))
        if token.kind == "read":
            self._next()
            return _Read(token.value, token.position, len(token.text))
        if token.kind == "hex":
            self._next()
            kind = "address" if len(token.value) == 42 else "bytes"
            return _Literal(token.value, kind, token.value, token.position, len(token.text))
        if token.kind == "name":
            if token.text in ("true", "false"):
                self._next()
                return _Literal(token.text == "true", "bool", token.text, token.position, len(token.text))
            return self._path_or_call()
        if self._at("op", "("):
            return self._parenthesised()
        if self._at("op", "["):
            return self._list()
        raise self._expected_value(token)

    def _path_or_call(self) -> _Node:
        first = self._peek()
        self._check_name(first, first_segment=True)
        parts = [self._next().text]
        end = first.position + len(first.text)
        while self._at("op", "."):
            self._next()
            token = self._peek()
            if token.kind != "name":
                raise self._fail(f"expected a field name after '.', found {_describe_token(token)}", token.position,
                                 max(1, len(token.text)), _NAME_HINT)
            self._check_name(token, first_segment=False)
            parts.append(self._next().text)
            end = token.position + len(token.text)
        path = _Path(tuple(parts), first.position, end - first.position)
        if self._at("op", "("):
            if len(parts) == 1 and parts[0] in FUNCTIONS:
                return self._call(first)
            if len(parts) == 1:
                raise self._fail(f"unknown function {parts[0]}", first.position, len(first.text),
                                 hint=f"the only functions are {', '.join(FUNCTIONS)}")
            raise self._fail(f"{path.dotted} cannot be called", first.position, path.length,
                             hint=f"fields are values, not methods; the only functions are {', '.join(FUNCTIONS)}")
        if self._at("op", "["):
            bracket = self._peek()
            raise self._fail("indexing is not supported", bracket.position,
                             hint="compare the field itself, or test membership with `x in [a, b]`")
        return path

    def _check_name(self, token: _Token, *, first_segment: bool) -> None:
        name = token.text
        if name.startswith("_"):
            raise self._fail(f"names cannot start with '_' ({name})", token.position, len(name), _NAME_HINT)
        if not first_segment:
            return  # after a dot only a field can follow, so `tx.from` or `args.in` are plain names
        if name in ("and", "or", "in", "not"):
            raise self._expected_value(token)
        self._check_foreign_word(token)

    def _check_foreign_word(self, token: _Token) -> None:
        """Python keywords and upper-case spellings of ours are mistakes worth naming, not unknown fields."""
        name = token.text
        if name.lower() in KEYWORDS and name not in KEYWORDS:
            raise self._fail(f"{name!r} is not a keyword", token.position, len(name),
                             hint=f"keywords are lower case: write {name.lower()}")
        if name == "None":
            raise self._fail("'None' is not part of the language", token.position, len(name),
                             hint="there is no null; every field in the schema always has a value")
        if name == "is":
            raise self._fail("'is' is not an operator here", token.position, len(name), hint="write == or !=")
        if name in ("if", "else"):
            raise self._fail(f"'{name}' is not part of the language", token.position, len(name),
                             hint="there are no conditional expressions; combine conditions with and / or")
        if keyword.iskeyword(name) and name not in KEYWORDS:
            raise self._fail(f"'{name}' is not part of the language", token.position, len(name),
                             hint="a condition is made of values, fields such as args.assets, operators, "
                                  f"and the functions {', '.join(FUNCTIONS)}")

    def _call(self, name: _Token) -> _Node:
        opening = self._next()
        self._enter(opening)
        args = [self._or()]
        while self._at("op", ","):
            self._next()
            args.append(self._or())
        self._close(")", opening)
        self.nesting -= 1
        return _Call(name.text, tuple(args), name.position, len(name.text))

    def _parenthesised(self) -> _Node:
        opening = self._next()
        self._enter(opening)
        node = self._or()
        self._close(")", opening)
        self.nesting -= 1
        return node

    def _list(self) -> _Node:
        opening = self._next()
        self._enter(opening)
        items: list[_Node] = []
        while not self._at("op", "]"):
            items.append(self._or())
            if not self._at("op", ","):
                break
            self._next()  # a trailing comma is fine: multi-line allowlists in TOML end with one
        self._close("]", opening)
        self.nesting -= 1
        return _List(tuple(items), opening.position)

    def _close(self, closing: str, opening: _Token) -> None:
        token = self._peek()
        if self._at("op", closing):
            self._next()
            return
        column = _where(self.source, opening.position)
        if token.kind == "end":
            raise self._fail(f"missing {closing!r}", token.position,
                             hint=f"the {opening.text!r} at {column} is never closed")
        raise self._fail(f"expected {closing!r}, found {_describe_token(token)}", token.position,
                         max(1, len(token.text)), hint=f"to close the {opening.text!r} at {column}")

    def _expected_value(self, token: _Token) -> ExpressionError:
        if token.kind == "end":
            return self._fail("expected a value, but the expression ends here", token.position,
                              hint="finish the expression, e.g. args.assets > 0")
        if token.kind == "name" and token.text == "not":
            return self._fail("expected a value, found 'not'", token.position, 3,
                              hint="not applies to a whole condition: write not (a > b), or use !=")
        if token.kind == "op" and token.text == ")":
            return self._fail("expected a value, found ')'", token.position, hint="something is missing before it")
        return self._fail(f"expected a value, found {_describe_token(token)}", token.position,
                          max(1, len(token.text)))

    def _unexpected_after(self, token: _Token) -> ExpressionError:
        if token.kind == "op" and token.text == ")":
            return self._fail("unbalanced ')': there is no '(' to close", token.position,
                              hint="remove it, or add the missing '(' before it")
        if token.kind == "op" and token.text == "%":
            return self._fail("'%' must follow a number, as in 25%", token.position,
                              hint="there is no remainder operator")
        if token.kind == "name":
            self._check_foreign_word(token)
            if token.text == "not":
                return self._fail("unexpected 'not'", token.position, 3, hint="did you mean `not in`?")
        return self._fail(f"unexpected {_describe_token(token)} after a complete expression", token.position,
                          max(1, len(token.text)), hint="join conditions with and / or")


def _describe_token(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the expression"
    if token.kind == "name":
        return f"name {token.text!r}" if token.text not in KEYWORDS else f"{token.text!r}"
    return f"{token.kind} {token.text}" if token.kind in ("number", "string", "hex") else repr(token.text)


def _quote(text: str) -> str:
    # Strings have no escapes, so a literal holds at most one kind of quote: pick the other one.
    return f'"{text}"' if "'" in text else f"'{text}'"


# ---- rendering (canonical form, for `onguard policies explain`) ----

_LOOSEST = 0
_NOT_LEVEL = 3
_COMPARISON_LEVEL = 4
_BITOR_LEVEL = 5
_BITAND_LEVEL = 6
_SHIFT_LEVEL = 7
_ADDITIVE_LEVEL = 8
_MULTIPLICATIVE_LEVEL = 9
_UNARY_LEVEL = 10
_ATOM_LEVEL = 11
_BINARY_LEVELS = {"|": _BITOR_LEVEL, "&": _BITAND_LEVEL, "<<": _SHIFT_LEVEL, ">>": _SHIFT_LEVEL,
                  "+": _ADDITIVE_LEVEL, "-": _ADDITIVE_LEVEL, "*": _MULTIPLICATIVE_LEVEL, "/": _MULTIPLICATIVE_LEVEL}


def _level(node: _Node) -> int:
    if isinstance(node, _Logical):
        return 1 if node.op == "or" else 2
    if isinstance(node, _Unary):
        return _NOT_LEVEL if node.op == "not" else _UNARY_LEVEL
    if isinstance(node, _Binary):
        return _BINARY_LEVELS.get(node.op, _COMPARISON_LEVEL)
    return _ATOM_LEVEL


def _render(node: _Node, at_least: int = _LOOSEST) -> str:
    """`node` as source, parenthesised if it binds looser than `at_least` requires."""
    text = _render_bare(node)
    return f"({text})" if _level(node) < at_least else text


def _render_bare(node: _Node) -> str:
    if isinstance(node, _Literal):
        return node.text
    if isinstance(node, _Path):
        return node.dotted
    if isinstance(node, _Read):
        return node.text
    if isinstance(node, _Call):
        return f"{node.name}({', '.join(_render(arg) for arg in node.args)})"
    if isinstance(node, _List):
        return f"[{', '.join(_render(item) for item in node.items)}]"
    if isinstance(node, _Unary):
        if node.op == "not":
            return f"not {_render(node.operand, _NOT_LEVEL)}"
        # `-(-x)` rather than `--x`, which reads like a typo.
        nested_minus = isinstance(node.operand, _Unary) and node.operand.op == "-"
        return f"-{_render(node.operand, _ATOM_LEVEL if nested_minus else _UNARY_LEVEL)}"
    if isinstance(node, _Binary):
        level = _level(node)
        if level == _COMPARISON_LEVEL:  # comparisons do not chain, so both sides must bind tighter
            return f"{_render(node.left, level + 1)} {node.op} {_render(node.right, level + 1)}"
        # Left-associative: a - b - c needs no parentheses, a - (b - c) keeps them.
        return f"{_render(node.left, level)} {node.op} {_render(node.right, level + 1)}"
    # and/or: operands that are themselves and/or keep their parentheses, so `a or (b and c)` is explicit.
    return f" {node.op} ".join(_render(operand, _NOT_LEVEL) for operand in node.operands)


# ---- schema ----

class _Schema:
    """The fields a condition may read: full dotted path -> type, and which paths sit under each prefix."""

    def __init__(self, schema: Mapping[str, str]) -> None:
        self.types: dict[tuple[str, ...], str] = {}
        self.under: dict[tuple[str, ...], list[str]] = {}
        for path, kind in schema.items():
            if kind not in TYPES:
                raise ValueError(f"schema type of {path!r} is {kind!r}; expected one of {', '.join(TYPES)}")
            parts = tuple(path.split("."))
            if not all(_NAME.fullmatch(part) and not part.startswith("_") for part in parts):
                raise ValueError(f"schema path {path!r} is not a dotted name of fields that start with a letter")
            self.types[parts] = kind
            for end in range(1, len(parts)):
                self.under.setdefault(parts[:end], []).append(path)
        both = sorted(".".join(parts) for parts in self.types if parts in self.under)
        if both:
            raise ValueError(f"schema paths {', '.join(both)} are both values and prefixes of other paths")

    def resolve(self, path: _Path, source: str) -> str:
        kind = self.types.get(path.parts)
        if kind is not None:
            return kind
        fail = lambda message, hint=None: _error(source, message, path.position, path.length, hint)  # noqa: E731
        if path.parts in self.under:
            fields = sorted(self.under[path.parts])
            listed = ", ".join(fields[:12]) + (", …" if len(fields) > 12 else "")
            raise fail(f"{path.dotted} is not a value; it holds {listed}", f"pick one, e.g. {fields[0]}")
        for end in range(len(path.parts) - 1, 0, -1):
            leaf = self.types.get(path.parts[:end])
            if leaf is not None:
                raise fail(f"{'.'.join(path.parts[:end])} is a {leaf} and has no field {path.parts[end]}",
                           "fields cannot be read from a value; there are no methods either")
        known = [".".join(parts) for parts in self.types]
        same_root = [name for name in known if name.split(".", 1)[0] == path.parts[0]]
        same_name = sorted(name for name in known if name.rsplit(".", 1)[-1] == path.parts[-1])
        close = (difflib.get_close_matches(path.dotted, same_root, n=1, cutoff=0.6) or same_name
                 or difflib.get_close_matches(path.dotted, known, n=1, cutoff=0.6))
        message = f"unknown field {path.dotted}" + (f"; did you mean {close[0]}?" if close else "")
        raise fail(message, self._known_hint(path.parts, known))

    def _known_hint(self, parts: tuple[str, ...], known: list[str]) -> str:
        for end in range(len(parts) - 1, 0, -1):
            siblings = self.under.get(parts[:end])
            if siblings:
                return f"fields under {'.'.join(parts[:end])}: {', '.join(sorted(siblings)[:12])}"
        roots = sorted({name.split(".", 1)[0] for name in known})
        return f"fields start with one of: {', '.join(roots)}" if roots else "the schema has no fields"


# ---- run time: reading fields from the context ----

def _type_name(kind: str) -> str:
    return {"number": "a number", "address": "an address", "bool": "a bool (true or false)", "string": "a string",
            "bytes": "bytes"}.get(kind, kind)


def _coerce(value: Any, kind: str, dotted: str) -> Any:
    """The slow path of a field read: checks the value's type and normalises it (addresses to lower case)."""
    if kind == "number":
        if isinstance(value, Fraction):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif kind in ("address", "bytes"):
        text = None
        if isinstance(value, (bytes, bytearray)):
            text = "0x" + bytes(value).hex()
        elif isinstance(value, str) and _HEX_VALUE.fullmatch(value):
            text = value.lower()
        if text is not None and (kind == "bytes" or len(text) == 42):
            return "0x" + text[2:]
    elif kind == "string":
        if isinstance(value, str):
            return value
    raise EvaluationError(f"{dotted} should be {_type_name(kind)}, got {type(value).__name__} {value!r:.80}",
                          hint="the context does not match the schema the condition was compiled against")


def _missing(context: Any, parts: tuple[str, ...]) -> EvaluationError:
    dotted = ".".join(parts)
    node = context
    for index, part in enumerate(parts):
        owner = ".".join(parts[:index]) or "the context"
        try:
            node = node[part]
        except KeyError:
            return EvaluationError(f"{dotted} is missing from the context ({owner} has no {part!r})")
        except (TypeError, IndexError):
            return EvaluationError(f"{dotted} cannot be read: {owner} is a {type(node).__name__}, not a mapping")
    return EvaluationError(f"{dotted} cannot be read from the context")


def _reader(parts: tuple[str, ...], kind: str) -> _Fn:
    """A closure reading one field with plain mapping lookups (never getattr), specialised on the path length
    because this is the hottest code in the daemon."""
    dotted = ".".join(parts)
    # Numbers and bools of exactly the right type are returned as they are; everything else (addresses, which
    # are lower-cased, and values of a wrong type) takes _coerce. `type(x) is None` is never true.
    fast = {"number": int, "bool": bool}.get(kind)
    lookup_errors = (KeyError, TypeError, IndexError)

    def slow(value: Any) -> Any:
        return _coerce(value, kind, dotted)

    if len(parts) == 1:
        (a,) = parts

        def read(context: Any) -> Any:
            try:
                value = context[a]
            except lookup_errors:
                raise _missing(context, parts) from None
            return value if type(value) is fast else slow(value)
    elif len(parts) == 2:
        a, b = parts

        def read(context: Any) -> Any:
            try:
                value = context[a][b]
            except lookup_errors:
                raise _missing(context, parts) from None
            return value if type(value) is fast else slow(value)
    elif len(parts) == 3:
        a, b, c = parts

        def read(context: Any) -> Any:
            try:
                value = context[a][b][c]
            except lookup_errors:
                raise _missing(context, parts) from None
            return value if type(value) is fast else slow(value)
    else:
        def read(context: Any) -> Any:
            value = context
            try:
                for part in parts:
                    value = value[part]
            except lookup_errors:
                raise _missing(context, parts) from None
            return value if type(value) is fast else slow(value)
    return read


# ---- run time: exact arithmetic ----

def _divide(a: Number, b: Number, node: _Binary) -> Number:
    if type(a) is int and type(b) is int and b:
        quotient, remainder = divmod(a, b)
        return quotient if not remainder else Fraction(a, b)  # never a / b: that would be a float
    if not b:
        raise EvaluationError(f"division by zero: {_render(node.right)} is 0 in {_render(node)}")
    return _whole(Fraction(a) / b)


def _multiply(a: Number, b: Number) -> Number:
    product = a * b
    return product if type(product) is int else _whole(product)


def _bitwise(op: str, a: Number, b: Number, node: _Binary) -> int:
    """Bit operators on whole, non-negative numbers: packed flags and fields of a uint256."""
    for value, side in ((a, node.left), (b, node.right)):
        if type(value) is not int or value < 0:
            raise EvaluationError(f"operator {op} needs whole, non-negative numbers: {_render(side)} is {value}")
    if op == "<<" and b > _MAX_SHIFT:
        raise EvaluationError(f"{_render(node)} shifts by {b} bits; at most {_MAX_SHIFT} (a uint256 has 256)")
    return _BITWISE[op](a, b)


_MAX_SHIFT = 256
_BITWISE: dict[str, Callable[[int, int], int]] = {"<<": operator.lshift, ">>": operator.rshift,
                                                  "&": operator.and_, "|": operator.or_}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": _multiply}
_ORDERING: dict[str, Callable[[Any, Any], Any]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                                   ">=": operator.ge}
_EQUALITY: dict[str, Callable[[Any, Any], Any]] = {"==": operator.eq, "!=": operator.ne}


# ---- compiler ----

_VARIES = object()  # marks a compiled node whose value depends on the context


class _Compiled(NamedTuple):
    type: str
    fn: _Fn
    const: Any = _VARIES   # the value, when it is known at compile time


class _Compiler:
    """Type-checks the tree against the schema and builds one closure per node, folding constant parts."""

    def __init__(self, source: str, schema: _Schema, reads: ReadResolver | None = None) -> None:
        self.source = source
        self.schema = schema
        self.resolve_read = reads
        self.references: set[str] = set()
        self.reads: dict[str, str] = {}  # read text -> its type

    def _fail(self, message: str, node: _Node, hint: str | None = None, *, position: int | None = None,
              length: int | None = None) -> ExpressionError:
        return _error(self.source, message, node.position if position is None else position,
                      node.length if length is None else length, hint)

    def build(self, node: _Node) -> _Compiled:
        if isinstance(node, _Literal):
            return _Compiled(node.type, _const_fn(node.value), node.value)
        if isinstance(node, _Path):
            kind = self.schema.resolve(node, self.source)
            self.references.add(node.dotted)
            return _Compiled(kind, _reader(node.parts, kind))
        if isinstance(node, _Read):
            return self._read(node)
        if isinstance(node, _List):
            raise self._fail("a list can only appear on the right of in or not in", node,
                             "write e.g. tx.from in [0x…, 0x…]")
        if isinstance(node, _Unary):
            return self._unary(node)
        if isinstance(node, _Binary):
            return self._binary(node)
        if isinstance(node, _Logical):
            return self._logical(node)
        return self._call(node)

    def _fold(self, node: _Node, compiled: _Compiled, parts: list[_Compiled]) -> _Compiled:
        """Constant sub-expressions such as `99 / 100` or `-5` are computed once, here."""
        if any(part.const is _VARIES for part in parts):
            return compiled
        try:
            value = compiled.fn(None)  # every part is a constant closure, which ignores the context
        except EvaluationError as exc:
            raise self._fail(exc.message, node) from None
        return _Compiled(compiled.type, _const_fn(value), value)

    def _read(self, node: _Read) -> _Compiled:
        assert self.resolve_read is not None  # the tokenizer makes reads only when there is a resolver
        try:
            kind = self.resolve_read(node.text)
        except ValueError as exc:
            message, _, hint = str(exc).partition(" — ")
            raise self._fail(message, node, hint or None) from None
        self.reads[node.text] = kind
        return _Compiled(kind, _reader((READ_VALUES, node.text), kind))

    def _unary(self, node: _Unary) -> _Compiled:
        operand = self.build(node.operand)
        f = operand.fn
        if node.op == "not":
            if operand.type != "bool":
                raise self._fail(f"operator not needs a bool, got {operand.type}", node,
                                 _bool_hint(operand.type))
            return self._fold(node, _Compiled("bool", lambda c: not f(c)), [operand])
        if operand.type != "number":
            raise self._fail(f"operator - needs a number, got {operand.type}", node)
        return self._fold(node, _Compiled("number", lambda c: -f(c)), [operand])

    def _binary(self, node: _Binary) -> _Compiled:
        if node.op in ("in", "not in"):
            return self._membership(node)
        left, right = self.build(node.left), self.build(node.right)
        op = node.op
        types = f"{left.type} and {right.type}"
        if op in _EQUALITY:
            if left.type != right.type:
                raise self._fail(f"operator {op} compares values of the same type, got {types}", node,
                                 _mismatch_hint(left.type, right.type))
            return self._fold(node, _Compiled("bool", _combine(_EQUALITY[op], left, right)), [left, right])
        if left.type != "number" or right.type != "number":
            if op in ("&", "|") and "bool" in (left.type, right.type):
                word = "and" if op == "&" else "or"
                raise self._fail(f"operator {op} needs numbers, got {types}", node,
                                 f"{op} works on the bits of numbers; join conditions with {word}")
            raise self._fail(f"operator {op} needs numbers, got {types}", node,
                             "arithmetic and <, <=, >, >= work on numbers only; compare other values with == or !=")
        if op in _ORDERING:
            return self._fold(node, _Compiled("bool", _combine(_ORDERING[op], left, right)), [left, right])
        if op in _BITWISE:
            bitwise = lambda a, b: _bitwise(op, a, b, node)  # noqa: E731
            return self._fold(node, _Compiled("number", _combine(bitwise, left, right)), [left, right])
        if op == "/":
            if right.const is not _VARIES and right.const == 0:
                raise self._fail("division by zero", node, f"the divisor {_render(node.right)} is always 0")
            divide = lambda a, b: _divide(a, b, node)  # noqa: E731
            return self._fold(node, _Compiled("number", _combine(divide, left, right)), [left, right])
        return self._fold(node, _Compiled("number", _combine(_ARITHMETIC[op], left, right)), [left, right])

    def _membership(self, node: _Binary) -> _Compiled:
        left = self.build(node.left)
        if not isinstance(node.right, _List):
            right = self.build(node.right)
            raise self._fail(f"operator {node.op} needs a list on the right, got {left.type} and "
                             f"{right.type}", node, "write a list literal, e.g. tx.from in [0x…, 0x…]")
        if not node.right.items:
            raise self._fail(f"operator {node.op} has an empty list on the right", node.right,
                             "x in [] is always false; list at least one value")
        items = [self.build(item) for item in node.right.items]
        for item_node, item in zip(node.right.items, items):
            if item.type != left.type:
                raise self._fail(f"operator {node.op} needs a list of {left.type} values like its left side, got "
                                 f"{left.type} and a list element that is {item.type}", item_node,
                                 _mismatch_hint(left.type, item.type))
        f = left.fn
        if all(item.const is not _VARIES for item in items):
            # Values are normalised (addresses lower-cased, whole numbers as ints), so a set lookup is exact.
            values = frozenset(item.const for item in items)
            if node.op == "in":
                compiled = _Compiled("bool", lambda c: f(c) in values)
            else:
                compiled = _Compiled("bool", lambda c: f(c) not in values)
            return self._fold(node, compiled, [left])
        fns = tuple(item.fn for item in items)
        if node.op == "in":
            return _Compiled("bool", lambda c: _contains(f(c), fns, c))
        return _Compiled("bool", lambda c: not _contains(f(c), fns, c))

    def _logical(self, node: _Logical) -> _Compiled:
        operands = [self.build(operand) for operand in node.operands]
        for index, operand in enumerate(operands):
            if operand.type != "bool":
                at = max(index - 1, 0)  # the operator next to the offending operand
                raise self._fail(f"operator {node.op} needs bools, got {operands[at].type} and "
                                 f"{operands[at + 1].type}", node, _bool_hint(operand.type),
                                 position=node.positions[at], length=len(node.op))
        fns = tuple(operand.fn for operand in operands)
        if len(fns) == 2:
            a, b = fns
            fn = (lambda c: a(c) and b(c)) if node.op == "and" else (lambda c: a(c) or b(c))
        elif node.op == "and":
            fn = lambda c: _all(fns, c)  # noqa: E731
        else:
            fn = lambda c: _any(fns, c)  # noqa: E731
        return self._fold(node, _Compiled("bool", fn), operands)

    def _call(self, node: _Call) -> _Compiled:
        args = [self.build(arg) for arg in node.args]
        if node.name == "abs" and len(args) != 1:
            raise self._fail(f"abs takes exactly 1 number, got {len(args)}", node)
        if node.name in ("min", "max") and len(args) < 2:
            raise self._fail(f"{node.name} takes 2 or more numbers, got {len(args)}", node,
                             f"{node.name} of a single value is the value itself")
        for arg_node, arg in zip(node.args, args):
            if arg.type != "number":
                raise self._fail(f"{node.name} needs numbers, got {arg.type}", arg_node)
        fns = tuple(arg.fn for arg in args)
        if node.name == "abs":
            (f,) = fns
            return self._fold(node, _Compiled("number", lambda c: abs(f(c))), args)
        pick = min if node.name == "min" else max
        if len(fns) == 2:
            a, b = fns
            return self._fold(node, _Compiled("number", lambda c: pick(a(c), b(c))), args)
        return self._fold(node, _Compiled("number", lambda c: pick([f(c) for f in fns])), args)


def _const_fn(value: Any) -> _Fn:
    return lambda c: value


def _combine(op: Callable[[Any, Any], Any], left: _Compiled, right: _Compiled) -> _Fn:
    """`op(left, right)` as a closure; a constant side is captured as a value, saving a call per evaluation."""
    lf, rf = left.fn, right.fn
    if right.const is not _VARIES and left.const is _VARIES:
        k = right.const
        return lambda c: op(lf(c), k)
    if left.const is not _VARIES and right.const is _VARIES:
        k = left.const
        return lambda c: op(k, rf(c))
    return lambda c: op(lf(c), rf(c))


def _contains(value: Any, fns: tuple[_Fn, ...], context: Any) -> bool:
    for fn in fns:
        if fn(context) == value:
            return True
    return False


def _all(fns: tuple[_Fn, ...], context: Any) -> bool:
    for fn in fns:
        if not fn(context):
            return False
    return True


def _any(fns: tuple[_Fn, ...], context: Any) -> bool:
    for fn in fns:
        if fn(context):
            return True
    return False


def _bool_hint(kind: str) -> str | None:
    if kind == "number":
        return "compare the number explicitly, e.g. args.assets > 0"
    if kind in ("address", "bytes", "string"):
        return f"compare the {kind} explicitly with == or !="
    return None


def _mismatch_hint(a: str, b: str) -> str | None:
    kinds = {a, b}
    if kinds == {"address", "string"}:
        return "write addresses without quotes: 0x followed by 40 hex digits"
    if kinds == {"address", "bytes"}:
        return "an address literal is 0x followed by exactly 40 hex digits"
    if kinds == {"number", "string"}:
        return "write numbers without quotes"
    if kinds == {"bool", "string"}:
        return "write true or false without quotes"
    if kinds == {"bool", "number"}:
        return "bools are not numbers: compare the number, e.g. args.assets > 0"
    return None


# ---- public API ----

@dataclass(frozen=True, slots=True, eq=False)
class Expression:
    """A compiled expression: evaluate it against a context of nested mappings as often as needed."""

    source: str
    references: frozenset[str]   # the dotted paths it reads
    result_type: str             # one of TYPES
    reads: Mapping[str, str]     # inline reads (text -> type), valued in the context under READ_VALUES
    _tree: _Node
    _fn: _Fn

    def evaluate(self, context: Context) -> Any:
        """The value on `context`: a bool for conditions, int or Fraction for numbers, lower-case 0x… for
        addresses and bytes. Raises EvaluationError for a missing field, a wrong type or a division by zero."""
        return self._fn(context)

    def describe(self) -> str:
        """The expression in canonical form: one space around operators, parentheses only where the structure
        needs them (plus around `and` inside `or`), keywords and hex in lower case."""
        return _render(self._tree)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"Expression({self.describe()!r}, result_type={self.result_type!r})"


def compile_expression(source: str, schema: Mapping[str, str], reads: ReadResolver | None = None) -> Expression:
    """Parses and type-checks `source` against `schema` (full dotted path -> type); raises ExpressionError.
    With `reads`, `contract.function(args)` may be written inline: `reads(text)` gives its type or raises
    ValueError("message — hint"); its value is then looked up as context[READ_VALUES][text].

    A schema that is itself malformed (unknown type, bad path) is a programming error: ValueError."""
    fields = _Schema(schema)
    tree = _Parser(source, reads=reads is not None).parse()
    compiler = _Compiler(source, fields, reads)
    compiled = compiler.build(tree)
    return Expression(source=source, references=frozenset(compiler.references), result_type=compiled.type,
                      reads=MappingProxyType(compiler.reads), _tree=tree, _fn=compiled.fn)


def compile_condition(source: str, schema: Mapping[str, str], reads: ReadResolver | None = None) -> Expression:
    """compile_expression, and the result must be a bool: what a policy's condition is."""
    expression = compile_expression(source, schema, reads)
    if expression.result_type != "bool":
        kind = _type_name(expression.result_type)
        start = len(source) - len(source.lstrip())
        raise _error(source, f"a condition must be true or false, but this expression is {kind}", start,
                     len(source.strip()), _bool_hint(expression.result_type))
    return expression
