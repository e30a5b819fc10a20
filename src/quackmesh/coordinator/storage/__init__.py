"""Content-addressed blob storage (local filesystem by default)."""
