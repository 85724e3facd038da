"""Remote DICOM nodes (``flask --app wsgi ae ...``): C-MOVE destinations and, with
``PLACA_AE_WHITELIST=1``, the only calling AEs the DICOM door accepts."""

from __future__ import annotations

import logging

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs.models import RemoteAE
from ris import audit
from ris.audit import Actor
from ris.config import AE_TITLE_PATTERN
from ris.errors import Conflict, Invalid, NotFound

logger = logging.getLogger(__name__)


def add_remote_ae(
    db: Session, actor: Actor, ae_title: str, host: str, port: int, description: str = ""
) -> RemoteAE:
    """Register a remote AE; its title must be new."""
    ae_title, host = ae_title.strip(), host.strip()
    if not AE_TITLE_PATTERN.match(ae_title):
        raise Invalid(str(_l("An AE title has 1 to 16 characters and no backslash.")),
                      field="ae_title")  # fmt: skip
    if not host or len(host) > 255 or any(ch.isspace() for ch in host):
        raise Invalid(str(_l("The host must be a host name or an address.")), field="host")
    if not 1 <= port <= 65535:
        raise Invalid(str(_l("The port must be between 1 and 65535.")), field="port")
    if find_remote_ae(db, ae_title) is not None:
        raise Conflict(str(_l("The AE title %(name)s is already registered.", name=ae_title)))
    node = RemoteAE(ae_title=ae_title, host=host, port=port, description=description.strip()[:200])
    db.add(node)
    db.flush()
    audit.record(db, actor, "remote_ae.add", object_type="remote_ae", object_id=ae_title,
                 detail={"host": host, "port": port})  # fmt: skip
    return node


def find_remote_ae(db: Session, ae_title: str) -> RemoteAE | None:
    return db.scalar(select(RemoteAE).where(RemoteAE.ae_title == ae_title.strip()))


def list_remote_aes(db: Session) -> list[RemoteAE]:
    return list(db.scalars(select(RemoteAE).order_by(RemoteAE.ae_title)))


def remove_remote_ae(db: Session, actor: Actor, ae_title: str) -> None:
    node = find_remote_ae(db, ae_title)
    if node is None:
        raise NotFound(str(_l("No remote AE %(name)s.", name=ae_title.strip())))
    db.delete(node)
    db.flush()
    audit.record(db, actor, "remote_ae.remove", object_type="remote_ae", object_id=node.ae_title)
