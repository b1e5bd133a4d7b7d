"""policies/expr.py: the policy condition language is exact, safe, typed, and says where and why it fails."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from onguard.errors import InputError, OnguardError, PolicyError
from onguard.policies import expr as expr_module
from onguard.policies.expr import (
    EvaluationError,
    Expression,
    ExpressionError,
    compile_condition,
    compile_expression,
)

SCHEMA = {
    "args.assets": "number",
    "args.shares": "number",
    "args.receiver": "address",
    "args.memo": "string",
    "args.data": "bytes",
    "args.flag": "bool",
    "tx.from": "address",
    "tx.value": "number",
    "state.vault.totalAssets": "number",
    "state.vault.totalSupply": "number",
    "state.vault.paused": "bool",
    "state.oracle.price": "number",
    "ref.price": "number",
}

ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"   # checksummed, as the chain layer hands them over
BOB = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
UINT256_MAX = 2**256 - 1


def context(**overrides: Any) -> dict[str, Any]:
    """A complete context for SCHEMA; keyword arguments replace leaves, e.g. assets=5 or paused=True."""
    ctx: dict[str, Any] = {
        "args": {"assets": 10, "shares": 10, "receiver": BOB, "memo": "hi", "data": "0xCAFE", "flag": False},
        "tx": {"from": ALICE, "value": 0},
        "state": {"vault": {"totalAssets": 1000, "totalSupply": 1000, "paused": False}, "oracle": {"price": 100}},
        "ref": {"price": 100},
    }
    for key, value in overrides.items():
        for table in _tables(ctx):
            if key in table:
                table[key] = value
                break
        else:
            raise KeyError(key)
    return ctx


def _tables(ctx: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for value in ctx.values():
        if isinstance(value, dict):
            if any(not isinstance(v, dict) for v in value.values()):
                yield value
            yield from _tables(value)


def value(source: str, ctx: Mapping[str, Any] | None = None, schema: Mapping[str, str] = SCHEMA) -> Any:
    return compile_expression(source, schema).evaluate(context() if ctx is None else ctx)


def holds(source: str, ctx: Mapping[str, Any] | None = None, schema: Mapping[str, str] = SCHEMA) -> bool:
    result = compile_condition(source, schema).evaluate(context() if ctx is None else ctx)
    assert type(result) is bool
    return result


def compile_error(source: str, schema: Mapping[str, str] = SCHEMA, *, condition: bool = True) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        (compile_condition if condition else compile_expression)(source, schema)
    return caught.value


def caret_position(error: ExpressionError) -> int:
    """The column (0-based) the caret line of the message points at, for one-line sources."""
    caret_line = str(error).splitlines()[-1]
    return caret_line.index("^") - 2


# ---- the examples from the brief ----

def test_the_documented_examples_compile_and_evaluate() -> None:
    assert holds("args.assets > 25% * state.vault.totalAssets", context(assets=251, totalAssets=1000))
    assert not holds("args.assets > 25% * state.vault.totalAssets", context(assets=250, totalAssets=1000))
    allow = ("tx.from not in [0x1111111111111111111111111111111111111111, "
             "0x2222222222222222222222222222222222222222] and tx.value == 0")
    assert holds(allow, context(**{"from": ALICE}))
    assert not holds(allow, context(**{"from": "0x1111111111111111111111111111111111111111"}))
    assert holds("abs(state.oracle.price - ref.price) > 5% * ref.price", context(price=94))
    assert not holds("abs(state.oracle.price - ref.price) > 5% * ref.price", context(price=95))
    solvent = "not state.vault.paused and state.vault.totalAssets >= state.vault.totalSupply * 99 / 100"
    assert holds(solvent, context(totalAssets=990, totalSupply=1000))
    assert not holds(solvent, context(totalAssets=989, totalSupply=1000))
    assert not holds(solvent, context(paused=True))


# ---- exact numbers ----

def test_integers_beyond_float_precision_stay_exact() -> None:
    # As floats, 10**24 + 1 and 10**24 are the same number.
    assert holds("1e24 + 1 > 1e24")
    assert holds("args.assets + 1 > args.assets", context(assets=10**24))
    assert holds("args.assets + 1 == 1_000_000_000_000_000_000_000_001", context(assets=10**24))
    assert value("123456789012345678901234567 - 1") == 123456789012345678901234566


def test_uint256_max_arithmetic_is_exact() -> None:
    ctx = context(assets=UINT256_MAX, shares=UINT256_MAX - 1)
    assert holds("args.assets - 1 == args.shares", ctx)
    assert holds("args.assets + 1 - args.assets == 1", ctx)
    assert value("args.assets * args.assets / args.assets", ctx) == UINT256_MAX
    assert value("args.assets + args.assets", ctx) == 2**257 - 2  # no wrap-around: math, not EVM overflow
    assert value("115792089237316195423570985008687907853269984665640564039457584007913129639935") == UINT256_MAX


@pytest.mark.parametrize(("literal", "expected"), [
    ("1_000_000e18", 10**24),
    ("1.5e18", 1_500_000_000_000_000_000),
    ("1.5E18", 1_500_000_000_000_000_000),
    ("250_000e18", 250_000 * 10**18),
    ("123456789.012345678901234567e18", 123456789012345678901234567),
    ("0", 0),
    ("007", 7),
    ("2.0", 2),
    ("1e0", 1),
])
def test_integer_literals_are_exact_ints(literal: str, expected: int) -> None:
    result = value(literal)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(("literal", "expected"), [
    ("0.25", Fraction(1, 4)),
    ("5%", Fraction(1, 20)),
    ("0.5%", Fraction(1, 200)),
    ("25 %", Fraction(1, 4)),
    ("1.25e-1", Fraction(1, 8)),
    ("0.1", Fraction(1, 10)),       # not 0.1000000000000000055511151231257827 as a float would be
])
def test_decimals_and_percentages_are_exact_fractions(literal: str, expected: Fraction) -> None:
    result = value(literal)
    assert result == expected
    assert isinstance(result, Fraction)


def test_a_whole_percentage_is_an_int() -> None:
    assert value("100%") == 1
    assert type(value("100%")) is int
    assert type(value("200% * 3")) is int


def test_division_is_exact() -> None:
    assert value("1 / 3") == Fraction(1, 3)
    assert holds("1 / 3 * 3 == 1")
    assert holds("0.1 + 0.2 == 0.3")   # false with floats
    assert value("6 / 3") == 2
    assert type(value("6 / 3")) is int
    big = 2**255 + 1
    assert value("args.assets / 3 * 3", context(assets=big)) == big
    assert value("args.assets / 2", context(assets=big)) == Fraction(big, 2)


def test_percentages_of_state_values_compare_exactly() -> None:
    # 25% of 1001 is 250.25: 250 is below, 251 above; integer division would get 250 wrong.
    assert not holds("args.assets > 25% * state.vault.totalAssets", context(assets=250, totalAssets=1001))
    assert holds("args.assets < 25% * state.vault.totalAssets", context(assets=250, totalAssets=1001))
    assert holds("args.assets > 25% * state.vault.totalAssets", context(assets=251, totalAssets=1001))


def test_numbers_never_become_floats() -> None:
    for source in ("1 / 3", "0.1 + 0.2", "5% * 7", "args.assets / 7", "-args.assets / 3", "abs(-1 / 3)",
                   "min(1 / 3, 0.25)", "max(1 / 3, 0.25)"):
        result = value(source, context(assets=10**30 + 1))
        assert type(result) in (int, Fraction), source


def test_fraction_values_in_the_context_are_accepted() -> None:
    assert holds("state.oracle.price == 1 / 3", context(price=Fraction(1, 3)))
    assert holds("state.oracle.price * 3 == 1", context(price=Fraction(1, 3)))


# ---- precedence and associativity ----

@pytest.mark.parametrize(("source", "expected"), [
    ("10 - 4 - 3", 3),          # (10 - 4) - 3, not 10 - (4 - 3)
    ("12 / 4 * 3", 9),          # (12 / 4) * 3, not 12 / (4 * 3)
    ("12 / 4 / 3", 1),
    ("2 + 3 * 4", 14),
    ("(2 + 3) * 4", 20),
    ("2 * 3 - 4 / 2", 4),
    ("-2 * 3", -6),
    ("- 2 - 3", -5),
    ("-(2 - 3)", 1),
    ("- -2", 2),
    ("10 - -2", 12),
    ("2 - 3 + 4", 3),
])
def test_arithmetic_precedence_and_left_associativity(source: str, expected: int) -> None:
    assert value(source) == expected


def test_variable_operands_follow_the_same_associativity() -> None:
    ctx = context(assets=100, shares=10, price=5)
    assert value("args.assets - args.shares - state.oracle.price", ctx) == 85
    assert value("args.assets / args.shares * state.oracle.price", ctx) == 50
    assert value("args.assets - (args.shares - state.oracle.price)", ctx) == 95


@pytest.mark.parametrize(("source", "expected"), [
    ("not false and false", False),     # (not false) and false
    ("not (false and false)", True),
    ("true or true and false", True),   # true or (true and false)
    ("(true or true) and false", False),
    ("false and true or true", True),   # (false and true) or true
    ("not 1 > 2", True),                # not (1 > 2): comparison binds tighter than not
    ("not not true", True),
    ("1 + 1 == 2 and 2 * 2 == 4", True),
    ("1 < 2 == true", None),            # chained: rejected, see test_parse_errors
])
def test_boolean_precedence(source: str, expected: bool | None) -> None:
    if expected is None:
        compile_error(source)
    else:
        assert holds(source) is expected


# ---- and / or / not, short-circuit ----

def test_and_short_circuits_before_a_missing_field_or_zero_division() -> None:
    missing = context()
    del missing["state"]["vault"]["totalAssets"]
    assert not holds("args.flag and state.vault.totalAssets > 0", missing)
    assert not holds("args.flag and args.assets / args.shares > 1", context(flag=False, shares=0))
    with pytest.raises(EvaluationError):
        holds("args.flag and args.assets / args.shares > 1", context(flag=True, shares=0))


def test_or_short_circuits() -> None:
    assert holds("args.flag or args.assets / args.shares > 1", context(flag=True, shares=0))
    with pytest.raises(EvaluationError):
        holds("args.flag or args.assets / args.shares > 1", context(flag=False, shares=0))


def test_long_and_or_chains() -> None:
    assert holds("true and true and true and true")
    assert not holds("true and true and false and true")
    assert holds("false or false or false or true")
    assert not holds("false or false or false or false")
    assert holds("args.flag or state.vault.paused or tx.value == 0")
    assert not holds("args.flag or state.vault.paused or tx.value == 1")


def test_not_negates() -> None:
    assert holds("not state.vault.paused", context(paused=False))
    assert not holds("not state.vault.paused", context(paused=True))


# ---- comparisons, in / not in ----

@pytest.mark.parametrize(("op", "a", "b"), [
    (op, a, b) for op in ("==", "!=", "<", "<=", ">", ">=") for a, b in ((1, 2), (2, 2), (3, 2))
])
def test_comparisons_agree_with_python(op: str, a: int, b: int) -> None:
    expected = {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    assert holds(f"args.assets {op} args.shares", context(assets=a, shares=b)) is expected


def test_int_and_fraction_compare_exactly() -> None:
    assert holds("1 / 2 == 0.5")
    assert holds("2 / 2 == 1")
    assert holds("1 / 3 < 0.3334")
    assert holds("1 / 3 > 0.3333")


def test_addresses_compare_case_insensitively() -> None:
    assert holds(f"tx.from == {ALICE.lower()}")
    assert holds(f"tx.from == 0x{ALICE[2:].upper()}")
    assert holds(f"tx.from != {BOB}")
    assert holds("tx.from == args.receiver", context(**{"from": BOB.lower(), "receiver": BOB}))
    assert value("tx.from") == ALICE.lower()


def test_in_and_not_in_with_address_lists_ignore_case() -> None:
    listed = f"[{BOB.upper().replace('0X', '0x')}, {ALICE.lower()}]"
    assert holds(f"tx.from in {listed}")
    assert not holds(f"tx.from not in {listed}")
    assert not holds(f"tx.from in [{BOB}]")
    assert holds(f"tx.from not in [{BOB}]")
    # multi-line TOML allowlists end with a comma
    assert holds(f"tx.from in [\n  {BOB},\n  {ALICE},\n]")


def test_in_with_fields_in_the_list() -> None:
    assert holds(f"tx.from in [args.receiver, {ALICE}]")
    assert holds("tx.from in [args.receiver]", context(receiver=ALICE.lower()))
    assert not holds("tx.from in [args.receiver]")
    assert holds("tx.from not in [args.receiver]")


def test_in_with_numbers_and_strings() -> None:
    assert holds("args.assets in [1, 10, 100]")
    assert holds("args.assets not in [1, 2.5, 100]")
    assert holds("state.oracle.price in [0.5, 1]", context(price=Fraction(1, 2)))
    assert holds("args.memo in ['hi', \"there\"]")
    assert not holds("args.memo in ['HI']")   # strings are not addresses: case matters


def test_bytes_compare_case_insensitively_whatever_their_python_type() -> None:
    assert holds("args.data == 0xcafe")
    assert holds("args.data == 0xCaFe", context(data=b"\xca\xfe"))
    assert holds("args.data == 0x", context(data=b""))
    assert not holds("args.data == 0xcafe00")


def test_strings_and_bools_compare() -> None:
    assert holds("args.memo == 'hi'")
    assert holds('args.memo != "HI"')
    assert holds("state.vault.paused == false")
    assert holds("state.vault.paused != true")
    assert holds("(args.assets > 5) == true")


# ---- functions ----

def test_min_max_abs() -> None:
    ctx = context(assets=7, shares=3, price=5)
    assert value("min(args.assets, args.shares)", ctx) == 3
    assert value("max(args.assets, args.shares)", ctx) == 7
    assert value("min(args.assets, args.shares, state.oracle.price, 4)", ctx) == 3
    assert value("max(1, 2, 3, args.assets, 5)", ctx) == 7
    assert value("abs(args.shares - args.assets)", ctx) == 4
    assert value("abs(args.assets - args.shares)", ctx) == 4
    assert value("min(1 / 3, 0.3)") == Fraction(3, 10)
    assert value("max(1 / 3, 0.3)") == Fraction(1, 3)
    assert value("abs(-1 / 3)") == Fraction(1, 3)
    assert value("min(-5, 2) * 2") == -10


# ---- parse errors: position and hint ----

PARSE_ERRORS = [
    # (source, part of the message, 0-based position, part of the hint)
    ("(args.assets > 1", "missing ')'", 16, "'(' at column 1 is never closed"),
    ("min(args.assets, 1 > 0", "missing ')'", 22, "never closed"),
    ("args.assets > 1)", "unbalanced ')'", 15, "remove it"),
    ("(args.assets > 1))", "unbalanced ')'", 17, "remove it"),
    ("args.assets > (1 2)", "expected ')'", 17, "to close the '('"),
    ("args.assets > 1 2", "unexpected number 2", 16, "and / or"),
    ("args.assets > 1 args.shares", "unexpected name 'args'", 16, "and / or"),
    ("args.assets > 1 true", "unexpected 'true'", 16, "and / or"),
    ("1 < args.assets < 3", "cannot be chained", 16, "a < b and b < c"),
    ("1 == 1 == 1", "cannot be chained", 7, "a < b and b < c"),
    ("args.assets in [1] == true", "cannot be chained", 19, "a < b and b < c"),
    ("foo(1) > 0", "unknown function foo", 0, "abs, max, min"),
    ("eval('1') > 0", "unknown function eval", 0, "abs, max, min"),
    ("__class__", "names cannot start with '_'", 0, "start with a letter"),
    ("args.__dict__", "names cannot start with '_'", 5, "start with a letter"),
    ("args.assets.__class__ == 1", "names cannot start with '_'", 12, "start with a letter"),
    ("_private > 0", "names cannot start with '_'", 0, "start with a letter"),
    ("().__class__", "expected a value, found ')'", 1, "missing"),
    ("import os", "'import' is not part of the language", 0, "abs, max, min"),
    ("__import__('os')", "names cannot start with '_'", 0, "start with a letter"),
    ("lambda: 1", "'lambda' is not part of the language", 0, "operators"),
    ("lambda x: x", "'lambda' is not part of the language", 0, "operators"),
    ("args.assets if true else 0", "'if' is not part of the language", 12, "and / or"),
    ("args.assets.bit_length() > 0", "args.assets.bit_length cannot be called", 0, "not methods"),
    ("tx.from.lower() == 1", "tx.from.lower cannot be called", 0, "abs, max, min"),
    ("args.memo == 'a\\'b'", "escape sequences are not supported", 15, "the other kind"),
    ("args.memo == 'a\\nb'", "escape sequences are not supported", 15, "the other kind"),
    ("args.memo == \"a\\x41\"", "escape sequences are not supported", 15, "the other kind"),
    ("args.memo == 'abc", "unterminated string", 13, "close it with '"),
    ("", "empty expression", 0, "args.assets > 0"),
    ("   ", "empty expression", 0, "args.assets > 0"),
    ("args.assets >", "the expression ends here", 13, "finish the expression"),
    ("not", "the expression ends here", 3, "finish the expression"),
    ("args.assets ** 2 > 0", "unexpected '**'", 12, "no power operator"),
    ("args.assets // 2 > 0", "unexpected '//'", 12, "/ is exact"),
    ("args.assets = 1", "unexpected character '='", 12, "=="),
    ("args.assets => 1", "unexpected '=>'", 12, ">="),
    ("args.assets <> 1", "unexpected '<>'", 12, "!="),
    ("args.assets > 1 && true", "unexpected '&&'", 16, "and"),
    ("args.assets > 1 || true", "unexpected '||'", 16, "or"),
    ("!state.vault.paused", "unexpected character '!'", 0, "not"),
    ("args.assets ≥ 1", "unexpected character '≥'", 12, ">="),
    ("args.assets > 1 AND true", "'AND' is not a keyword", 16, "write and"),
    ("True", "'True' is not a keyword", 0, "write true"),
    ("args.memo == None", "'None' is not part of the language", 13, "no null"),
    ("args.assets is 1", "'is' is not an operator", 12, "== or !="),
    ("args.assets % 2 == 0", "'%' must follow a number", 12, "no remainder operator"),
    ("args.assets[0] > 1", "indexing is not supported", 11, "in [a, b]"),
    ("args. > 1", "expected a field name after '.'", 6, "start with a letter"),
    ("args.0 > 1", "expected a field name after '.'", 5, "start with a letter"),
    (".5 > 0", "expected a value, found '.'", 0, None),
    ("args.assets > 10ether", "malformed number '10ether'", 14, "1.5e18"),
    ("args.assets > 1.5.3", "malformed number '1.5.3'", 14, "1.5e18"),
    ("args.assets > 1__000", "malformed number '1__000'", 14, "1_000_000"),
    ("args.assets > 1_", "malformed number '1_'", 14, "1_000_000"),
    ("args.assets > 1e", "malformed number '1e'", 14, "1.5e18"),
    ("args.assets > 1e1000", "out of range", 14, "2**256"),
    ("args.assets > 2e77", "out of range", 14, "2**256 - 1"),
    ("args.data == 0x123", "odd number of hex digits", 13, "exactly 40 hex digits"),
    ("args.data == 0xcafg", "'g' is not a hex digit", 18, "0-9, a-f"),
    ("args.assets in [1 2]", "expected ']', found number 2", 18, "to close the '['"),
    ("args.assets in [1, 2", "missing ']'", 20, "never closed"),
    ("min() > 0", "expected a value, found ')'", 4, "missing"),
    ("args.assets not 1", "unexpected 'not'", 12, "not in"),
    ("args.assets > not 1", "expected a value, found 'not'", 14, "not (a > b)"),
    ("and", "expected a value, found 'and'", 0, None),
    ("args.assets > 1;", "unexpected character ';'", 15, "only numbers"),
    ("args.assets > 1 # comment", "unexpected character '#'", 16, "only numbers"),
    ("args.assets > `1`", "unexpected character '`'", 14, "only numbers"),
    ("args.memo == “hi”", "unexpected character '“'", 13, "plain quotes"),
]


@pytest.mark.parametrize(("source", "message", "position", "hint"), PARSE_ERRORS,
                         ids=[case[0] or "<empty>" for case in PARSE_ERRORS])
def test_parse_errors(source: str, message: str, position: int, hint: str | None) -> None:
    error = compile_error(source)
    assert message in error.bare_message
    assert error.position == position
    if hint is not None:
        assert error.hint is not None and hint in error.hint
    # The message shows the source and a caret under the offending column.
    assert f"  {source}\n" in str(error) or not source.strip()
    assert caret_position(error) == position
    assert f"column {position + 1}" in str(error)


def test_parse_errors_are_policy_errors_with_exit_code_2() -> None:
    error = compile_error("args.assets >")
    assert isinstance(error, PolicyError)
    assert isinstance(error, InputError)
    assert error.exit_code == 2


def test_lexical_errors_come_after_earlier_syntax_errors() -> None:
    # `lambda x: x` fails at lambda, not at the ':' the tokenizer would stumble on later.
    assert compile_error("lambda x: x").position == 0
    assert compile_error("args.assets > 1 args.shares # x").position == 16


def test_nesting_is_bounded_instead_of_exhausting_the_stack() -> None:
    for source in ("(" * 60 + "true" + ")" * 60, "not " * 60 + "true", "-" * 60 + "1 > 0",
                   "1 + " * 150 + "1 > 0", "abs(" * 60 + "1" + ")" * 60 + " > 0"):
        error = compile_error(source)
        assert "nested too deeply" in error.bare_message
        assert error.hint is not None and "simpler conditions" in error.hint


def test_reasonable_nesting_and_long_allowlists_compile() -> None:
    assert holds("(" * 20 + "true" + ")" * 20)
    assert holds("1 + " * 60 + "1 == 61")
    addresses = ", ".join(f"0x{index:040x}" for index in range(500))
    assert not holds(f"tx.from in [{addresses}]")
    ors = " or ".join(f"tx.from == 0x{index:040x}" for index in range(300))
    assert not holds(ors)


def test_multi_line_sources_report_line_and_column() -> None:
    error = compile_error("args.assets > 0 and\n  args.shres > 0")
    assert (error.line, error.column) == (2, 3)
    assert "line 2, column 3" in str(error)
    assert str(error).endswith("    args.shres > 0\n    ^^^^^^^^^^")


def test_caret_lines_up_after_tabs() -> None:
    error = compile_error("\targs.assets > \t1 1")
    assert str(error).endswith("  \targs.assets > \t1 1\n  \t              \t  ^")


def test_with_location_prefixes_file_and_field_and_keeps_the_rest() -> None:
    error = compile_error("args.asets > 0")
    located = error.with_location("policies/drain.toml", "condition")
    assert isinstance(located, ExpressionError)
    assert str(located).startswith("policies/drain.toml: condition: unknown field args.asets")
    assert located.position == error.position
    assert located.bare_message == error.bare_message
    assert located.hint == error.hint
    assert located.render().startswith("error: policies/drain.toml: condition: unknown field args.asets")
    assert "hint: " in located.render()


# ---- fields ----

def test_unknown_field_suggests_the_closest_known_one() -> None:
    error = compile_error("args.asets > 25% * state.vault.totalAssets")
    assert error.bare_message == "unknown field args.asets; did you mean args.assets?"
    assert error.position == 0 and error.length == len("args.asets")
    assert error.hint is not None and "args.assets" in error.hint
    error = compile_error("state.vault.totalAsets > 0")
    assert "did you mean state.vault.totalAssets?" in error.bare_message


def test_unknown_field_with_a_known_last_name_suggests_its_full_path() -> None:
    assert "did you mean state.vault.paused?" in compile_error("paused").bare_message


def test_unknown_field_without_a_close_match_lists_what_exists() -> None:
    error = compile_error("block.number > 0")
    assert error.bare_message == "unknown field block.number"
    assert error.hint == "fields start with one of: args, ref, state, tx"


def test_a_prefix_of_fields_lists_what_is_under_it() -> None:
    error = compile_error("state.vault", condition=False)
    assert error.bare_message == ("state.vault is not a value; it holds state.vault.paused, "
                                  "state.vault.totalAssets, state.vault.totalSupply")
    assert compile_error("state > 0").bare_message.startswith("state is not a value; it holds state.oracle.price")


def test_a_field_of_a_value_is_rejected() -> None:
    error = compile_error("args.assets.bit_length > 0")
    assert error.bare_message == "args.assets is a number and has no field bit_length"


def test_references_and_result_type() -> None:
    expression = compile_condition("not state.vault.paused and state.vault.totalAssets >= "
                                   "state.vault.totalSupply * 99 / 100 and state.vault.paused == false", SCHEMA)
    assert expression.references == frozenset({"state.vault.paused", "state.vault.totalAssets",
                                                "state.vault.totalSupply"})
    assert expression.result_type == "bool"
    assert compile_expression("1 + 2", SCHEMA).references == frozenset()
    assert compile_expression("tx.from", SCHEMA).result_type == "address"
    assert compile_expression("args.memo", SCHEMA).result_type == "string"
    assert compile_expression("args.data", SCHEMA).result_type == "bytes"
    assert compile_expression("0x1234", SCHEMA).result_type == "bytes"
    assert compile_expression(f"{ALICE}", SCHEMA).result_type == "address"
    assert compile_expression("args.assets * 2", SCHEMA).result_type == "number"


# ---- type errors ----

TYPE_ERRORS = [
    # (source, message, 0-based position of the caret, part of the hint or None)
    ("args.assets + tx.from > 0", "operator + needs numbers, got number and address", 12, "numbers only"),
    ("args.assets * true > 0", "operator * needs numbers, got number and bool", 12, "numbers only"),
    ("args.memo / 2 > 0", "operator / needs numbers, got string and number", 10, "numbers only"),
    ("tx.from > args.receiver", "operator > needs numbers, got address and address", 8, "== or !="),
    ("args.memo < 'x'", "operator < needs numbers, got string and string", 10, "== or !="),
    ("tx.from == args.assets", "operator == compares values of the same type, got address and number", 8, None),
    ("tx.from == '0x70997970c51812dc3a010c7d01b50e0d17dc79c8'",
     "operator == compares values of the same type, got address and string", 8, "without quotes"),
    ("tx.from != 0x1234", "operator != compares values of the same type, got address and bytes", 8,
     "exactly 40 hex digits"),
    ("args.assets == '5'", "operator == compares values of the same type, got number and string", 12,
     "without quotes"),
    ("state.vault.paused == 1", "operator == compares values of the same type, got bool and number", 19,
     "bools are not numbers"),
    ("state.vault.paused == 'false'", "got bool and string", 19, "true or false without quotes"),
    ("args.assets in [tx.from]", "operator in needs a list of number values like its left side, got number "
     "and a list element that is address", 16, None),
    (f"tx.from not in [{ALICE}, 1]", "operator not in needs a list of address values", 60, None),
    ("args.assets in args.shares", "operator in needs a list on the right, got number and number", 12,
     "list literal"),
    ("tx.from in []", "operator in has an empty list on the right", 11, "always false"),
    ("args.assets and true", "operator and needs bools, got number and bool", 12, "args.assets > 0"),
    ("true and args.flag and tx.from", "operator and needs bools, got bool and address", 19, "== or !="),
    ("true or args.assets", "operator or needs bools, got bool and number", 5, "compare the number"),
    ("not args.assets", "operator not needs a bool, got number", 0, "compare the number"),
    ("-tx.from == 1", "operator - needs a number, got address", 0, None),
    ("abs(tx.from) > 0", "abs needs numbers, got address", 4, None),
    ("abs(1, 2) > 0", "abs takes exactly 1 number, got 2", 0, None),
    ("min(1) > 0", "min takes 2 or more numbers, got 1", 0, "the value itself"),
    ("max(1, true) > 0", "max needs numbers, got bool", 7, None),
    ("[1, 2] == [1, 2]", "a list can only appear on the right of in or not in", 0, "tx.from in"),
    ("args.assets in [[1]]", "a list can only appear on the right of in or not in", 16, None),
    ("1 / 0 > 1", "division by zero", 2, "always 0"),
    ("args.assets / (2 - 2) > 1", "division by zero", 12, "the divisor 2 - 2 is always 0"),
]


@pytest.mark.parametrize(("source", "message", "position", "hint"), TYPE_ERRORS,
                         ids=[case[0] for case in TYPE_ERRORS])
def test_type_errors(source: str, message: str, position: int, hint: str | None) -> None:
    error = compile_error(source)
    assert message in error.bare_message
    assert error.position == position
    assert caret_position(error) == position
    if hint is not None:
        assert error.hint is not None and hint in error.hint


@pytest.mark.parametrize(("source", "kind"), [("args.assets + 1", "a number"), ("tx.from", "an address"),
                                              ("args.memo", "a string"), ("args.data", "bytes")])
def test_a_condition_must_be_a_bool(source: str, kind: str) -> None:
    error = compile_error(f"  {source}")
    assert error.bare_message == f"a condition must be true or false, but this expression is {kind}"
    assert error.position == 2 and error.length == len(source)
    compile_expression(source, SCHEMA)  # fine as an expression


# ---- evaluation errors ----

def test_a_missing_field_is_an_evaluation_error_naming_it() -> None:
    expression = compile_condition("args.assets > 25% * state.vault.totalAssets", SCHEMA)
    ctx = context()
    del ctx["state"]["vault"]["totalAssets"]
    with pytest.raises(EvaluationError, match=r"state\.vault\.totalAssets is missing from the context "
                                              r"\(state\.vault has no 'totalAssets'\)"):
        expression.evaluate(ctx)
    with pytest.raises(EvaluationError, match=r"args\.assets is missing from the context \(the context has no "
                                              r"'args'\)"):
        expression.evaluate({})
    with pytest.raises(EvaluationError, match=r"args\.assets cannot be read: args is a int, not a mapping"):
        expression.evaluate({"args": 5})
    with pytest.raises(EvaluationError, match=r"state\.vault\.totalAssets cannot be read: state is a list"):
        expression.evaluate({"args": {"assets": 1}, "state": [1]})


def test_a_missing_field_is_never_a_key_error() -> None:
    for source in ("state.vault.paused", "tx.from == 0x" + "00" * 20, "args.assets > 0", "-args.assets < 1"):
        with pytest.raises(EvaluationError) as caught:
            compile_expression(source, SCHEMA).evaluate({"args": {}, "tx": {}, "state": {}})
        assert not isinstance(caught.value, KeyError)
        assert isinstance(caught.value, OnguardError)


def test_fields_are_read_with_mapping_lookups_not_attributes() -> None:
    class Obj:
        assets = 5
    with pytest.raises(EvaluationError, match="args.assets cannot be read: args is a Obj, not a mapping"):
        compile_condition("args.assets > 0", SCHEMA).evaluate({"args": Obj()})


def test_division_by_zero_at_run_time_is_an_evaluation_error() -> None:
    expression = compile_condition("args.assets / state.vault.totalSupply > 1", SCHEMA)
    with pytest.raises(EvaluationError, match=r"division by zero: state\.vault\.totalSupply is 0 in "
                                              r"args\.assets / state\.vault\.totalSupply"):
        expression.evaluate(context(totalSupply=0))
    with pytest.raises(EvaluationError, match="division by zero"):
        compile_condition("1 / (args.assets - args.shares) > 0", SCHEMA).evaluate(context(assets=3, shares=3))
    with pytest.raises(EvaluationError, match="division by zero"):
        compile_condition("0.5 / state.oracle.price > 0", SCHEMA).evaluate(context(price=Fraction(0)))


@pytest.mark.parametrize(("field", "bad", "expected"), [
    ("paused", 1, "state.vault.paused should be a bool (true or false), got int 1"),
    ("paused", "false", "state.vault.paused should be a bool (true or false), got str 'false'"),
    ("assets", True, "args.assets should be a number, got bool True"),
    ("assets", 1.0, "args.assets should be a number, got float 1.0"),
    ("assets", "1", "args.assets should be a number, got str '1'"),
    ("from", 123, "tx.from should be an address, got int 123"),
    ("from", "0x1234", "tx.from should be an address, got str '0x1234'"),
    ("from", "alice.eth", "tx.from should be an address, got str 'alice.eth'"),
    ("memo", b"hi", "args.memo should be a string, got bytes b'hi'"),
    ("data", "cafe", "args.data should be bytes, got str 'cafe'"),
])
def test_values_of_the_wrong_type_are_evaluation_errors(field: str, bad: Any, expected: str) -> None:
    source = {"paused": "state.vault.paused", "assets": "args.assets > 0", "from": "tx.from == args.receiver",
              "memo": "args.memo == 'x'", "data": "args.data == 0x00"}[field]
    with pytest.raises(EvaluationError) as caught:
        compile_condition(source, SCHEMA).evaluate(context(**{field: bad}))
    assert caught.value.message == expected


def test_int_subclasses_other_than_bool_are_numbers() -> None:
    class Wei(int):
        pass
    assert holds("args.assets == 5", context(assets=Wei(5)))


# ---- the schema ----

@pytest.mark.parametrize(("schema", "message"), [
    ({"args.assets": "uint256"}, "expected one of number, address, bool, string, bytes"),
    ({"args._amount": "number"}, "start with a letter"),
    ({"args..x": "number"}, "not a dotted name"),
    ({"args": "number", "args.assets": "number"}, "both values and prefixes"),
])
def test_a_malformed_schema_is_a_programming_error(schema: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_expression("1", schema)


def test_keywords_are_plain_names_after_a_dot() -> None:
    schema = {"tx.from": "address", "args.in": "number", "args.not": "bool"}
    assert holds("args.in > 1 and not args.not", {"args": {"in": 2, "not": False}}, schema)


# ---- rendering ----

@pytest.mark.parametrize(("source", "canonical"), [
    ("args.assets>25%*state.vault.totalAssets", "args.assets > 25% * state.vault.totalAssets"),
    ("((args.assets)) > (1)", "args.assets > 1"),
    ("(10 - 4) - 3 == 3", "10 - 4 - 3 == 3"),
    ("10 - (4 - 3) == 9", "10 - (4 - 3) == 9"),
    ("(12 / 4) * 3 == 9", "12 / 4 * 3 == 9"),
    ("12 / (4 * 3) == 1", "12 / (4 * 3) == 1"),
    ("2 + (3 * 4) == 14", "2 + 3 * 4 == 14"),
    ("(2 + 3) * 4 == 20", "(2 + 3) * 4 == 20"),
    ("- -2 == 2", "-(-2) == 2"),
    ("-(2 + 3) == -5", "-(2 + 3) == -5"),
    ("(-2) * 3 == -6", "-2 * 3 == -6"),
    ("true or true and false", "true or (true and false)"),
    ("(true or false) and true", "(true or false) and true"),
    ("not (true and false)", "not (true and false)"),
    ("(not true) and false", "not true and false"),
    ("not (1 > 2)", "not 1 > 2"),
    ("(1 > 2) == false", "(1 > 2) == false"),
    ("tx.from  not  in  [0xABCDEF0123456789abcdef0123456789ABCDEF01,]",
     "tx.from not in [0xabcdef0123456789abcdef0123456789abcdef01]"),
    ("abs( 1 - 2 ) > 0", "abs(1 - 2) > 0"),
    ("min(1,2,  3) == 1", "min(1, 2, 3) == 1"),
    ("args.memo == \"it's\"", "args.memo == \"it's\""),
    ("args.memo == \"plain\"", "args.memo == 'plain'"),
    ("1_000_000E18 > 1.5e18", "1_000_000e18 > 1.5e18"),
    ("args.data == 0XCAFE", "args.data == 0xcafe"),
])
def test_canonical_rendering(source: str, canonical: str) -> None:
    expression = compile_condition(source, SCHEMA)
    assert str(expression) == canonical
    assert expression.describe() == canonical
    again = compile_condition(canonical, SCHEMA)
    assert str(again) == canonical
    assert again.evaluate(context()) == expression.evaluate(context())


def test_expression_is_immutable_and_keeps_its_source() -> None:
    expression = compile_condition("args.assets>0", SCHEMA)
    assert isinstance(expression, Expression)
    assert expression.source == "args.assets>0"
    assert repr(expression) == "Expression('args.assets > 0', result_type='bool')"
    with pytest.raises(AttributeError):
        expression.source = "true"  # type: ignore[misc]


# ---- safety of the implementation itself ----

def test_the_module_never_evaluates_text_as_python() -> None:
    code = Path(expr_module.__file__).read_text()
    assert not re.search(r"(?<![\w.])(eval|exec|compile|getattr|__import__)\s*\(", code)
    assert not re.search(r"^\s*(import ast|from ast )", code, re.MULTILINE)
    assert "literal_eval" not in code
    assert "float(" not in code


# ---- bit operators: packed flags in a uint256 ----


@pytest.mark.parametrize(("source", "expected"), [
    ("(state.vault.totalAssets >> 60) & 1 == 1", True),     # Aave-style: bit 60 of a configuration word
    ("state.vault.totalAssets >> 60 & 1 == 1", True),       # & binds looser than >>, tighter than ==
    ("state.vault.totalAssets & 2 == 0", True),
    ("1 << 60 | 1 == state.vault.totalAssets", True),       # | binds looser than <<
    ("1 + 1 << 2 == 8", True),                              # + binds tighter than <<
    ("6 & 3 | 8 == 10", True),                              # & before |
    ("(state.vault.totalAssets >> 61) & 1 == 1", False),
])
def test_bit_operators_bind_as_in_python(source: str, expected: bool) -> None:
    assert holds(source, context(totalAssets=(1 << 60) | 1)) is expected


def test_bit_operators_agree_with_python_on_uint256_values() -> None:
    word = UINT256_MAX - (1 << 200)
    ctx = context(totalAssets=word, totalSupply=7)
    assert value("state.vault.totalAssets >> 200", ctx) == word >> 200
    assert value("state.vault.totalAssets & (1 << 200)", ctx) == 0
    assert value("state.vault.totalAssets | state.vault.totalSupply", ctx) == word | 7
    assert value("state.vault.totalSupply << 249", ctx) == 7 << 249


@pytest.mark.parametrize(("source", "overrides", "message"), [
    ("state.vault.totalAssets & 1 == 1", {"totalAssets": -3}, "needs whole, non-negative numbers"),
    ("state.vault.totalAssets >> 1 == 1", {"totalAssets": Fraction(5, 2)}, "needs whole, non-negative numbers"),
    ("1 << state.vault.totalAssets == 0", {"totalAssets": 10**6}, "at most 256"),
])
def test_bit_operators_refuse_what_is_not_a_bit_pattern(source: str, overrides: dict[str, Any],
                                                        message: str) -> None:
    expression = compile_condition(source, SCHEMA)
    with pytest.raises(EvaluationError, match=message):
        expression.evaluate(context(**overrides))


@pytest.mark.parametrize(("source", "message"), [
    ("1 / 2 & 1 == 0", "needs whole, non-negative numbers"),
    ("args.flag & 1 == 1", "operator & needs numbers, got bool and number"),
    ("args.receiver >> 1 == 0", "operator >> needs numbers, got address and number"),
])
def test_bit_operator_mistakes_found_at_compile_time(source: str, message: str) -> None:
    assert message in compile_error(source).bare_message


def test_other_languages_bit_and_logic_spellings_still_get_a_hint() -> None:
    assert compile_error("args.flag && true").hint == "write and"
    assert compile_error("args.flag & true").hint == "& works on the bits of numbers; join conditions with and"
    assert compile_error("args.flag | tx.value > 0").hint == "| works on the bits of numbers; join conditions with or"
    assert compile_error("~args.assets == 0").hint is not None


@pytest.mark.parametrize(("source", "canonical"), [
    ("(state.vault.totalAssets>>60)&1==1", "state.vault.totalAssets >> 60 & 1 == 1"),
    ("(1 | 2) & 3 == 3", "(1 | 2) & 3 == 3"),
    ("(1 + 2) << 3 == 24", "1 + 2 << 3 == 24"),
    ("1 << (2 + 3) == 32", "1 << 2 + 3 == 32"),
    ("1 << (2 << 3) > 0", "1 << (2 << 3) > 0"),
])
def test_bit_operators_render_canonically(source: str, canonical: str) -> None:
    assert str(compile_condition(source, SCHEMA)) == canonical
    assert str(compile_condition(canonical, SCHEMA)) == canonical


# ---- inline reads (an action's done_when) ----


def resolver(types: Mapping[str, str]) -> Any:
    def resolve(text: str) -> str:
        if text not in types:
            raise ValueError(f"no read {text} — known: {', '.join(types)}")
        return types[text]
    return resolve


def test_inline_reads_are_resolved_by_the_caller_and_valued_from_the_context() -> None:
    types = {"pool.paused()": "bool", "pool.getReserveData(usdc, 1e18)": "number", "paused()": "bool"}
    expression = compile_condition("pool.paused() and (pool.getReserveData( usdc, 1e18 ) >> 60) & 1 == 1 "
                                   "or not paused()", {}, reads=resolver(types))
    assert dict(expression.reads) == types
    values = {"pool.paused()": True, "pool.getReserveData(usdc, 1e18)": 1 << 60, "paused()": True}
    assert expression.evaluate({expr_module.READ_VALUES: values}) is True
    assert expression.evaluate({expr_module.READ_VALUES: values | {"pool.paused()": False}}) is False
    assert str(expression) == ("(pool.paused() and pool.getReserveData(usdc, 1e18) >> 60 & 1 == 1) "
                               "or not paused()")


def test_an_inline_read_the_caller_refuses_points_at_it() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_condition("true and pool.unknown(x)", {}, reads=resolver({}))
    assert caught.value.bare_message == "no read pool.unknown(x)"
    assert caught.value.hint == "known: "
    assert caught.value.position == 9


def test_without_a_resolver_a_call_is_still_refused() -> None:
    error = compile_error("state.vault.paused() == true")
    assert "cannot be called" in error.bare_message


def test_functions_and_keywords_are_not_reads() -> None:
    expression = compile_condition("not (max(1, 2) == 2) or abs(-1) == 1", {}, reads=resolver({}))
    assert expression.reads == {}
    assert expression.evaluate({}) is True
