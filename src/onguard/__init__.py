"""onguard: an on-chain guardian that watches a protocol and pauses it through a Safe when a policy trips."""

import os

# eth-hash picks its keccak backend at the first hash; pycryptodome comes first in its list, but the C pysha3 is
# 9x faster, and address checksums (three keccaks' worth per pending transaction) sit on the pre-emption path.
# A backend named in the environment still wins.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

__version__ = "0.1.0"
