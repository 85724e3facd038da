"""A tiny synchronous event hub: services announce what happened, packages react in the same
transaction.

``publish(db, name, **data)`` calls every handler subscribed to ``name`` with ``(db, **data)``
right away, inside the caller's transaction: what a handler writes (an outbox row, a charge)
commits or rolls back with the change that caused it. A handler that raises makes the change
fail too, so nothing happens without its consequences.

Events published by the services:

* ``exam.booked`` (exam, step, actor) from :func:`ris.scheduling.book`
* ``exam.rescheduled`` (exam, step, actor) from :func:`ris.scheduling.reschedule`
* ``exam.status`` (exam, before, after, reason, actor) from :func:`ris.status.change_status`,
  for every move on the status ladder (cancel, no-show, arrival, completion...)

Handlers register at import of their module (``subscribe(name, handler)``); the composition
root imports those modules, so every door of every process has the same subscribers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

Handler = Callable[..., None]
"""``handler(db, **data)``."""

_handlers: dict[str, list[Handler]] = {}


def subscribe(name: str, handler: Handler) -> None:
    """Call ``handler(db, **data)`` whenever ``name`` is published (once, however often asked)."""
    handlers = _handlers.setdefault(name, [])
    if handler not in handlers:
        handlers.append(handler)


def unsubscribe(name: str, handler: Handler) -> None:
    handlers = _handlers.get(name, [])
    if handler in handlers:
        handlers.remove(handler)


def publish(db: Session, name: str, **data: Any) -> None:
    """Run the handlers of ``name`` now, in ``db``'s transaction, in subscription order."""
    for handler in list(_handlers.get(name, ())):
        handler(db, **data)
    logger.debug("event %s: %d handlers", name, len(_handlers.get(name, ())))
