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
    pass


def downgrade() -> None:
    pass
