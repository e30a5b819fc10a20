"""Federated learning in the coordinator: submission, the round state machine, aggregation
and the HTTP endpoints (``/v1/fl``). The maths is in :mod:`quackmesh.fl`."""
