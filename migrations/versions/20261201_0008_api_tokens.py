"""API tokens for DICOMweb and REST clients (bearer).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ris.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", ris.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", ris.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", ris.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", ris.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
