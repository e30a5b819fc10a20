"""Balances, the development faucet and the public ledger audit endpoints."""
