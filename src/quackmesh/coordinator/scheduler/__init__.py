"""Matching queued tasks to nodes, leases, their expiry and re-queueing."""
