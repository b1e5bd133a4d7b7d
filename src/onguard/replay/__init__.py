"""Scenario replay: the scenario format, the fork runner and its reports."""
