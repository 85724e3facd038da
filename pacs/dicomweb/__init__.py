"""DICOMweb (PS3.18) on the archive: QIDO-RS, WADO-RS, WADO-URI and STOW-RS under ``/dicomweb``.

One blueprint; each service is a module that adds its routes to it (imported at the bottom,
one line each). The services sit on the same index (:mod:`pacs.models`), matching and storage
code (:mod:`pacs.storage`, :mod:`pacs.ingest`) as the DICOM door.
"""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
bp = blueprint  # the name ris.app registers every blueprint by

# Route modules (each adds its routes to ``blueprint``), one line each.
from pacs.dicomweb import rendered  # noqa: E402,F401,I001 (one line per module)
from pacs.dicomweb import wado  # noqa: E402,F401
from pacs.dicomweb import stow  # noqa: E402,F401
from pacs.dicomweb import wado_uri  # noqa: E402,F401
from pacs.dicomweb import qido  # noqa: E402,F401
