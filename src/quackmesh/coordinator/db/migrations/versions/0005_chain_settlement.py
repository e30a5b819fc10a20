"""on-chain settlement: chain state, deposits, withdrawal vouchers, balance epochs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_state",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("deployed_block", sa.BigInteger(), nullable=False),
        sa.Column("scanned_block", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("vault"),
    )
    op.create_table(
        "chain_deposits",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("deposit_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("credited_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("vault", "deposit_id"),
    )
    op.create_index(op.f("ix_chain_deposits_account"), "chain_deposits", ["account"], unique=False)
    op.create_table(
        "withdrawal_vouchers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("settled_at", sa.Float(), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_withdrawal_vouchers_account"), "withdrawal_vouchers", ["account"], unique=False
    )
    op.create_index(
        "ix_withdrawal_vouchers_state_expiry",
        "withdrawal_vouchers",
        ["state", "expiry"],
        unique=False,
    )
    op.create_table(
        "balance_epochs",
        sa.Column("vault", sa.String(length=42), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("journal_seq", sa.Integer(), nullable=False),
        sa.Column("journal_head", sa.String(length=66), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("balances", sa.JSON(), nullable=False),
        sa.Column("first_event", sa.Integer(), nullable=False),
        sa.Column("last_event", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("posted_at", sa.Float(), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("vault", "epoch"),
    )


def downgrade() -> None:
    op.drop_table("balance_epochs")
    op.drop_index("ix_withdrawal_vouchers_state_expiry", table_name="withdrawal_vouchers")
    op.drop_index(op.f("ix_withdrawal_vouchers_account"), table_name="withdrawal_vouchers")
    op.drop_table("withdrawal_vouchers")
    op.drop_index(op.f("ix_chain_deposits_account"), table_name="chain_deposits")
    op.drop_table("chain_deposits")
    op.drop_table("chain_state")
