"""Operations: notifications to people, Prometheus metrics and the health endpoints (see docs/operations.md)."""
