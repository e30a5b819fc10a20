"""Request authentication helpers: capability tokens for blob URLs."""
