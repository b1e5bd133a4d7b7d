"""The demo: a Safe-governed protocol on a local Anvil chain, an attack on it, and the guardian stopping it."""
