"""Layer 3: coordinator tables, engines and Alembic migrations."""
