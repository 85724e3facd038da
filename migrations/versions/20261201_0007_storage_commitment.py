"""Storage commitment requests (IHE RAD-10) kept until their N-EVENT-REPORT is delivered.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ris.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('storage_commitments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('transaction_uid', sa.String(length=64), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('requestor_address', sa.String(length=255), nullable=False),
    sa.Column('references', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('pending', 'reported', 'failed', name='commitmentstate', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', ris.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.Column('reported_at', ris.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', ris.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ris.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storage_commitments'))
    )
    with op.batch_alter_table('storage_commitments', schema=None) as batch_op:
        batch_op.create_index('ix_storage_commitments_due', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_storage_commitments_transaction', ['transaction_uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('storage_commitments', schema=None) as batch_op:
        batch_op.drop_index('ix_storage_commitments_transaction')
        batch_op.drop_index('ix_storage_commitments_due')

    op.drop_table('storage_commitments')
