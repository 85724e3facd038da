"""API tokens for DICOMweb and REST clients (bearer).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ris.db

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
