"""Policies: what "unsafe" means for a protocol, loaded from files and evaluated by a pure engine."""
