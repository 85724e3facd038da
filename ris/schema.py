"""The whole schema: importing this module imports every package's models.

Alembic and the schema tests read ``metadata`` from here, so a package that adds tables
adds its ``models`` import below.
"""

from __future__ import annotations

import pacs.models  # noqa: F401
import ris.models  # noqa: F401
import worklist.models  # noqa: F401
from ris.db import Base

metadata = Base.metadata
