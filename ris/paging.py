"""One page of a newest-first list screen (audit log, HL7 messages, outbox)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from flask import request
from sqlalchemy import Select
from sqlalchemy.orm import Session

T = TypeVar("T")
PAGE_SIZE = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    number: int
    has_more: bool
    query: str  # the request's other arguments, for the "newer"/"older" links


def page_of(db: Session, query: Select[Any], size: int = PAGE_SIZE) -> Page[Any]:
    """The page the request asks for (``?page=N``); one extra row tells whether more follow."""
    number = max(1, request.args.get("page", 1, type=int) or 1)
    rows = list(db.scalars(query.limit(size + 1).offset((number - 1) * size)))
    args = request.args.to_dict()
    args.pop("page", None)
    return Page(rows[:size], number, len(rows) > size, urlencode(args))
