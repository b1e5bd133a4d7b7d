"""onguard: an on-chain guardian that watches a protocol and pauses it through a Safe when a policy trips."""

__version__ = "0.1.0"
