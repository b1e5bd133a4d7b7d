"""Several guardians, one pause: a replica's identity and deadlines, the leader lease for once-only work, and the
response claims replicas share through PostgreSQL."""
