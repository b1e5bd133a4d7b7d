"""Talking to chains: ABIs, RPC clients, keys and the Anvil launcher."""
