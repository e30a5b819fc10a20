"""On-chain settlement: the coordinator's side of DuckToken and the Vault (issue 7)."""
