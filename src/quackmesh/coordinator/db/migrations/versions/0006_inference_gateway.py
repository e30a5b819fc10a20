"""inference gateway: models served per node, API keys, inference requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("models", sa.JSON(), server_default="[]", nullable=False))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_sha256"),
    )
    op.create_index(op.f("ix_api_keys_address"), "api_keys", ["address"], unique=False)
    op.create_table(
        "inference_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("node", sa.String(length=42), nullable=True),
        sa.Column("price", sa.BigInteger(), nullable=True),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("refunded", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_nodes", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("checked_by", sa.JSON(), nullable=False),
        sa.Column("first_chunk_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_inference_requests_address"), "inference_requests", ["address"], unique=False
    )
    op.create_index(
        op.f("ix_inference_requests_node"), "inference_requests", ["node"], unique=False
    )
    op.create_index(
        op.f("ix_inference_requests_state"), "inference_requests", ["state"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_inference_requests_state"), table_name="inference_requests")
    op.drop_index(op.f("ix_inference_requests_node"), table_name="inference_requests")
    op.drop_index(op.f("ix_inference_requests_address"), table_name="inference_requests")
    op.drop_table("inference_requests")
    op.drop_index(op.f("ix_api_keys_address"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_column("nodes", "models")
