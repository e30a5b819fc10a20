"""Layer 1: ids, money, identity and signing, wire schemas and the error hierarchy."""
