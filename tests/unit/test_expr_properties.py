"""policies/expr.py, by property: exact uint256 arithmetic, comparisons as Python's, and a canonical rendering that
re-parses to an expression evaluating identically."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

from onguard.policies.expr import EvaluationError, ExpressionError, compile_condition, compile_expression

SCHEMA = {"args.x": "number", "args.y": "number", "state.pool.z": "number", "args.flag": "bool",
          "tx.from": "address"}

uint256 = st.integers(min_value=0, max_value=2**256 - 1)
small_or_huge = st.one_of(st.integers(-1000, 1000), uint256, uint256.map(lambda n: -n))

Env = dict[str, Any]
Reference = Callable[[Env], Any]   # the expected value, computed with Python's own exact arithmetic


def context(env: Env) -> dict[str, Any]:
    return {"args": {"x": env["x"], "y": env["y"], "flag": env["flag"]}, "state": {"pool": {"z": env["z"]}},
            "tx": {"from": "0x" + "ab" * 20}}


environments = st.fixed_dictionaries({"x": small_or_huge, "y": small_or_huge, "z": small_or_huge,
                                      "flag": st.booleans()})


# ---- random expressions, as (fully parenthesised source, reference evaluator) ----

def _const(value: Fraction | int) -> Reference:
    return lambda env: value


def _field(name: str) -> Reference:
    return lambda env: env[name]


number_literals = st.one_of(
    uint256.map(lambda n: (str(n), _const(n))),
    st.integers(0, 10**9).map(lambda n: (f"{n:_}", _const(n))),
    st.tuples(st.integers(0, 999), st.integers(0, 99)).map(
        lambda t: (f"{t[0]}.{t[1]:02d}", _const(Fraction(t[0] * 100 + t[1], 100)))),
    st.integers(0, 300).map(lambda n: (f"{n}%", _const(Fraction(n, 100)))),
    st.tuples(st.integers(10, 99), st.integers(0, 40)).map(
        lambda t: (f"{t[0] // 10}.{t[0] % 10}e{t[1]}", _const(Fraction(t[0], 10) * 10**t[1]))),
)
number_fields = st.sampled_from([("args.x", "x"), ("args.y", "y"), ("state.pool.z", "z")]).map(
    lambda pair: (pair[0], _field(pair[1])))


def _arithmetic(op: str, left: tuple[str, Reference], right: tuple[str, Reference]) -> tuple[str, Reference]:
    (a_text, a), (b_text, b) = left, right

    def reference(env: Env) -> Any:
        x, y = Fraction(a(env)), Fraction(b(env))
        if op == "+":
            return x + y
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        return x / y   # raises ZeroDivisionError, as the expression must raise EvaluationError
    return f"({a_text} {op} {b_text})", reference


def _negate(operand: tuple[str, Reference]) -> tuple[str, Reference]:
    text, f = operand
    return f"(-{text})", lambda env: -f(env)


def _function(name: str, args: list[tuple[str, Reference]]) -> tuple[str, Reference]:
    pick = {"min": min, "max": max}[name] if name != "abs" else None
    if pick is None:
        text, f = args[0]
        return f"abs({text})", lambda env: abs(f(env))
    return f"{name}({', '.join(text for text, _ in args)})", lambda env: pick([f(env) for _, f in args])


def _number_extend(children: st.SearchStrategy[tuple[str, Reference]]) -> st.SearchStrategy[tuple[str, Reference]]:
    return st.one_of(
        st.builds(_arithmetic, st.sampled_from("+-*/"), children, children),
        children.map(_negate),
        st.builds(_function, st.just("abs"), children.map(lambda c: [c])),
        st.builds(_function, st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)),
    )


numbers = st.recursive(st.one_of(number_literals, number_fields), _number_extend, max_leaves=8)


def _compare(op: str, left: tuple[str, Reference], right: tuple[str, Reference]) -> tuple[str, Reference]:
    (a_text, a), (b_text, b) = left, right
    python = {"==": lambda x, y: x == y, "!=": lambda x, y: x != y, "<": lambda x, y: x < y,
              "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}[op]
    return f"({a_text} {op} {b_text})", lambda env: python(a(env), b(env))


def _logical(op: str, left: tuple[str, Reference], right: tuple[str, Reference]) -> tuple[str, Reference]:
    (a_text, a), (b_text, b) = left, right
    if op == "and":
        return f"({a_text} and {b_text})", lambda env: a(env) and b(env)   # Python short-circuits too
    return f"({a_text} or {b_text})", lambda env: a(env) or b(env)


def _not(operand: tuple[str, Reference]) -> tuple[str, Reference]:
    text, f = operand
    return f"(not {text})", lambda env: not f(env)


def _membership(op: str, left: tuple[str, Reference], items: list[tuple[str, Reference]]) -> tuple[str, Reference]:
    text, f = left
    listed = ", ".join(item_text for item_text, _ in items)
    inside = lambda env: any(f(env) == item(env) for _, item in items)  # noqa: E731
    if op == "in":
        return f"({text} in [{listed}])", inside
    return f"({text} not in [{listed}])", lambda env: not inside(env)


bool_leaves = st.one_of(
    st.builds(_compare, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers, numbers),
    st.builds(_membership, st.sampled_from(["in", "not in"]), numbers, st.lists(numbers, min_size=1, max_size=3)),
    st.sampled_from([("args.flag", _field("flag")), ("true", _const(True)), ("false", _const(False))]),
)
conditions = st.recursive(
    bool_leaves,
    lambda children: st.one_of(st.builds(_logical, st.sampled_from(["and", "or"]), children, children),
                               children.map(_not)),
    max_leaves=6,
)


def outcome(evaluate: Callable[[], Any]) -> Any:
    """The value, or the marker that evaluation raised (so two evaluations that both fail compare equal)."""
    try:
        return evaluate()
    except EvaluationError as exc:
        assert "division by zero" in exc.message
        return "division by zero"


def reference_outcome(reference: Reference, env: Env) -> Any:
    try:
        return reference(env)
    except ZeroDivisionError:
        return "division by zero"


def compiled(source: str, condition: bool) -> Any:
    try:
        return (compile_condition if condition else compile_expression)(source, SCHEMA)
    except ExpressionError as exc:
        # A divisor that is constantly zero is refused at load, and random trees can nest past the limits.
        assert "division by zero" in exc.bare_message or "nested too deeply" in exc.bare_message, exc
        reject()


# ---- properties ----

@given(a=uint256, b=uint256)
def test_adding_and_subtracting_the_same_uint256_is_exact(a: int, b: int) -> None:
    env = {"x": a, "y": b, "z": 0, "flag": False}
    assert compile_condition("args.x + args.y - args.y == args.x", SCHEMA).evaluate(context(env)) is True
    assert compile_condition(f"{a} + {b} - {b} == {a}", SCHEMA).evaluate({}) is True
    assert compile_condition(f"{a} + {b} - {b} == {a} + 1", SCHEMA).evaluate({}) is False


@given(a=small_or_huge, b=small_or_huge, op=st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
def test_comparisons_agree_with_python_on_ints(a: int, b: int, op: str) -> None:
    expected = {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    env = {"x": a, "y": b, "z": 0, "flag": False}
    assert compile_condition(f"args.x {op} args.y", SCHEMA).evaluate(context(env)) is expected
    literal = lambda n: str(n) if n >= 0 else f"-{-n}"  # noqa: E731
    assert compile_condition(f"{literal(a)} {op} {literal(b)}", SCHEMA).evaluate({}) is expected


@given(a=uint256, b=uint256.filter(bool))
def test_division_is_exact_rational_division(a: int, b: int) -> None:
    env = {"x": a, "y": b, "z": 0, "flag": False}
    result = compile_expression("args.x / args.y", SCHEMA).evaluate(context(env))
    assert result == Fraction(a, b)
    assert type(result) is (int if a % b == 0 else Fraction)
    assert compile_condition("args.x / args.y * args.y == args.x", SCHEMA).evaluate(context(env)) is True


@given(n=uint256)
def test_integer_literals_with_underscores_read_exactly(n: int) -> None:
    assert compile_expression(f"{n:_}", SCHEMA).evaluate({}) == n


@given(mantissa=st.integers(0, 10**20), decimals=st.integers(0, 20), exponent=st.integers(0, 40))
def test_scientific_literals_read_exactly(mantissa: int, decimals: int, exponent: int) -> None:
    digits = str(mantissa).rjust(decimals + 1, "0")
    text = f"{digits[:len(digits) - decimals]}.{digits[len(digits) - decimals:]}e{exponent}" if decimals \
        else f"{digits}e{exponent}"
    expected = Fraction(mantissa, 10**decimals) * 10**exponent
    assume(expected < 2**256)
    assert compile_expression(text, SCHEMA).evaluate({}) == expected


@given(address=st.binary(min_size=20, max_size=20), cases=st.lists(st.booleans(), min_size=40, max_size=40),
       other_cases=st.lists(st.booleans(), min_size=40, max_size=40))
def test_addresses_compare_whatever_their_case(address: bytes, cases: list[bool], other_cases: list[bool]) -> None:
    digits = address.hex()
    literal = "0x" + "".join(d.upper() if up else d for d, up in zip(digits, cases))
    in_context = "0x" + "".join(d.upper() if up else d for d, up in zip(digits, other_cases))
    assert compile_condition(f"tx.from == {literal}", SCHEMA).evaluate({"tx": {"from": in_context}}) is True
    assert compile_condition(f"tx.from in [{literal}]", SCHEMA).evaluate({"tx": {"from": in_context}}) is True


@settings(max_examples=300)
@given(expression=numbers, env=environments)
def test_numeric_expressions_match_python_fractions(expression: tuple[str, Reference], env: Env) -> None:
    source, reference = expression
    compiled_expression = compiled(source, condition=False)
    actual = outcome(lambda: compiled_expression.evaluate(context(env)))
    assert actual == reference_outcome(reference, env), source
    assert type(actual) in (int, Fraction, str)   # never a float


@settings(max_examples=300)
@given(condition=conditions, env=environments)
def test_conditions_match_python_with_short_circuit(condition: tuple[str, Reference], env: Env) -> None:
    source, reference = condition
    compiled_condition = compiled(source, condition=True)
    actual = outcome(lambda: compiled_condition.evaluate(context(env)))
    expected = reference_outcome(reference, env)
    assert actual == expected, source
    if expected != "division by zero":
        assert type(actual) is bool


@settings(max_examples=300)
@given(condition=conditions, env=environments)
def test_canonical_rendering_reparses_to_an_identical_expression(condition: tuple[str, Reference], env: Env) -> None:
    source, _ = condition
    original = compiled(source, condition=True)
    canonical = str(original)
    again = compile_condition(canonical, SCHEMA)
    assert str(again) == canonical                     # the canonical form is a fixed point
    assert again.references == original.references
    assert outcome(lambda: again.evaluate(context(env))) == outcome(lambda: original.evaluate(context(env)))
    assert len(canonical) <= len(source)               # parentheses are only kept where needed


@settings(max_examples=300)
@given(expression=numbers, env=environments)
def test_canonical_rendering_of_arithmetic_keeps_its_value(expression: tuple[str, Reference], env: Env) -> None:
    source, _ = expression
    original = compiled(source, condition=False)
    again = compile_expression(str(original), SCHEMA)
    assert str(again) == str(original)
    assert outcome(lambda: again.evaluate(context(env))) == outcome(lambda: original.evaluate(context(env)))
