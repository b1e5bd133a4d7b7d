"""Incidents: the daemon's memory of what it saw and did."""
