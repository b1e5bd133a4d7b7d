"""Responders: put a decision into effect on chain."""
