"""Policy kinds: each module parses its kind's TOML into a frozen policy and evaluates it block by block."""
