"""Benchmark: microseconds per evaluation of compiled policy conditions (onguard.policies.expr).

Run: .venv/bin/python bench/expressions.py [--evaluations 100000]
Each condition is compiled once, then evaluated against one realistic context (uint256-sized values,
checksummed addresses) in a tight loop timed with time.perf_counter.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

from onguard.policies.expr import compile_condition

SCHEMA = {
    "args.assets": "number",
    "args.receiver": "address",
    "tx.from": "address",
    "tx.value": "number",
    "state.vault.totalAssets": "number",
    "state.vault.totalSupply": "number",
    "state.vault.paused": "bool",
    "state.oracle.price": "number",
    "ref.price": "number",
}

CONDITIONS = [
    "args.assets > 25% * state.vault.totalAssets",
    "tx.from not in [0x1111111111111111111111111111111111111111, 0x2222222222222222222222222222222222222222]"
    " and tx.value == 0",
    "abs(state.oracle.price - ref.price) > 5% * ref.price",
    "not state.vault.paused and state.vault.totalAssets >= state.vault.totalSupply * 99 / 100",
    "args.assets > 1_000_000e18 or (args.receiver != tx.from and args.assets * 100 / state.vault.totalAssets > 10)",
]

CONTEXT = {
    "args": {"assets": 123_456_789_012_345_678_901_234, "receiver": "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"},
    "tx": {"from": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "value": 0},
    "state": {
        "vault": {"totalAssets": 987_654_321_098_765_432_109_876_543,
                  "totalSupply": 987_000_000_000_000_000_000_000_000, "paused": False},
        "oracle": {"price": 2_013_450_000_000_000_000_000},
    },
    "ref": {"price": 2_000_000_000_000_000_000_000},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=100_000)
    count = parser.parse_args().evaluations
    for source in CONDITIONS:
        expression = compile_condition(source, SCHEMA)
        evaluate = expression.evaluate
        result = evaluate(CONTEXT)
        assert isinstance(result, bool) and not isinstance(result, Fraction)
        start = time.perf_counter()
        for _ in range(count):
            evaluate(CONTEXT)
        elapsed = time.perf_counter() - start
        print(f"{elapsed / count * 1e6:6.2f} µs  -> {result!s:5}  {expression}")


if __name__ == "__main__":
    main()
