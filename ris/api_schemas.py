"""What the JSON API accepts: strict, declarative input specs that also document themselves.

Each request body and query string is described once (ris/api/fields.py), as a mapping
of field names to :class:`Field`; :func:`parse_body` and :func:`parse_query` check a
request against it and :func:`body_schema` turns it into the JSON Schema that
/api/openapi.json publishes, so the document cannot drift from what the API accepts.
A malformed body, an unknown field (a typo) or a wrong type is refused with 400 and the
field's name before any service runs; whether the values make sense is the services'
business (422, 409).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

from flask import request
from flask_babel import gettext as _
from sqlalchemy.orm import InstrumentedAttribute

from ris.errors import PlacaError
from ris.models import ProcedureCode

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
LONG_TEXT = 4000


class BadRequest(PlacaError):
    """The request is not what the API accepts (malformed JSON, unknown field, wrong type)."""

    status = 400


class UnsupportedMediaType(PlacaError):
    status = 415


def _wrong(name: str, expected: str) -> BadRequest:
    return BadRequest(_("%(field)s must be %(expected)s.", field=name, expected=expected),
                      field=name)  # fmt: skip


class Kind:
    """A JSON type: how to read it from a body or a query string, and its JSON Schema."""

    expected = "a value"

    def parse(self, value: Any, name: str) -> Any:
        raise NotImplementedError

    def parse_text(self, text: str, name: str) -> Any:
        return self.parse(text, name)

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind):
    max_length: int = LONG_TEXT

    def parse(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise _wrong(name, _("a string"))
        if len(value.strip()) > self.max_length:
            raise BadRequest(_("%(field)s is longer than %(n)d characters.", field=name,
                               n=self.max_length), field=name)  # fmt: skip
        return value.strip()

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length}


@dataclass(frozen=True)
class Integer(Kind):
    minimum: int = 1
    maximum: int = 2**31 - 1

    def parse(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(name, _("an integer"))
        if not self.minimum <= value <= self.maximum:
            raise BadRequest(_("%(field)s must be between %(low)d and %(high)d.", field=name,
                               low=self.minimum, high=self.maximum), field=name)  # fmt: skip
        return value

    def parse_text(self, text: str, name: str) -> int:
        if not re.fullmatch(r"-?\d{1,10}", text):
            raise _wrong(name, _("an integer"))
        return self.parse(int(text), name)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


class Boolean(Kind):
    def parse(self, value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise _wrong(name, _("true or false"))
        return value

    def parse_text(self, text: str, name: str) -> bool:
        if text not in ("true", "false"):
            raise _wrong(name, _("true or false"))
        return text == "true"

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Choice(Kind):
    """One of a set of strings; with an Enum class, its values (and the member is returned)."""

    values: type[Enum] | tuple[str, ...]

    def _allowed(self) -> list[str]:
        if isinstance(self.values, tuple):
            return list(self.values)
        return [str(member.value) for member in self.values]

    def parse(self, value: Any, name: str) -> Any:
        allowed = self._allowed()
        if value not in allowed:
            raise _wrong(name, _("one of %(values)s", values=", ".join(allowed)))
        return value if isinstance(self.values, tuple) else self.values(value)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": self._allowed()}


class Date(Kind):
    def parse(self, value: Any, name: str) -> date:
        try:
            if isinstance(value, str) and _DATE.match(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        raise _wrong(name, _("a date (YYYY-MM-DD)"))

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date"}


class DateTime(Kind):
    """An ISO 8601 date and time with its offset: a naive time would be ambiguous."""

    def parse(self, value: Any, name: str) -> datetime:
        try:
            if isinstance(value, str) and _DATETIME.match(value):
                return datetime.fromisoformat(value)
        except ValueError:
            pass
        raise _wrong(name, _("an ISO 8601 date and time with an offset (2025-03-14T09:30:00Z)"))

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time"}


class Time(Kind):
    def parse(self, value: Any, name: str) -> time:
        try:
            if isinstance(value, str) and _TIME.match(value):
                return time.fromisoformat(value)
        except ValueError:
            pass
        raise _wrong(name, _("a time of day (HH:MM)"))

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^\d{2}:\d{2}(:\d{2})?$", "examples": ["08:00"]}


class Money(Kind):
    """An amount with at most two decimals, as a string ("120.50") or a number."""

    def parse(self, value: Any, name: str) -> Decimal:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                amount = Decimal(str(value))
            except InvalidOperation:
                amount = None
            if amount is not None and amount.is_finite() and 0 <= amount < 10**8:
                if amount == amount.quantize(Decimal("0.01")):
                    return amount
        raise _wrong(name, _("an amount from 0 to 99999999.99 with at most two decimals"))

    def schema(self) -> dict[str, Any]:
        return {"type": ["string", "number"], "examples": ["120.50"]}


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind
    max_items: int = 50

    def parse(self, value: Any, name: str) -> list[Any]:
        if not isinstance(value, list) or len(value) > self.max_items:
            raise _wrong(name, _("a list of at most %(n)d items", n=self.max_items))
        return [self.item.parse(item, name) for item in value]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema(), "maxItems": self.max_items}


@dataclass(frozen=True)
class CodeRef:
    """A procedure code named by its coding system and code."""

    code_system: str
    code: str


class ProcedureRef(Kind):
    """A procedure code by id (``12``) or by ``{"code_system": "CPT", "code": "74177"}``."""

    def parse(self, value: Any, name: str) -> int | CodeRef:
        if isinstance(value, dict):
            parts = parse_fields(value, CODE_REF_FIELDS)
            return CodeRef(parts["code_system"], parts["code"])
        return Integer().parse(value, name)

    def schema(self) -> dict[str, Any]:
        return {"oneOf": [Integer().schema(), body_schema(CODE_REF_FIELDS)]}


class RoomRef(Kind):
    """A room by id (``3``) or by code (``"CT1"``)."""

    def parse(self, value: Any, name: str) -> int | str:
        if isinstance(value, str):
            return Text(16).parse(value, name)
        return Integer().parse(value, name)

    def schema(self) -> dict[str, Any]:
        return {"oneOf": [Integer().schema(), Text(16).schema()]}


@dataclass(frozen=True)
class Field:
    kind: Kind
    required: bool = False
    nullable: bool = False
    description: str = ""


Spec = Mapping[str, Field]


def parse_fields(payload: dict[str, Any], spec: Spec, *, partial: bool = False) -> dict[str, Any]:
    """The fields of ``payload`` checked against ``spec``; absent fields stay absent."""
    for name in payload:
        if name not in spec:
            raise BadRequest(_("Unknown field %(field)s.", field=name), field=name)
    if not partial:
        for name, field in spec.items():
            if field.required and name not in payload:
                raise BadRequest(_("%(field)s is required.", field=name), field=name)
    parsed = {}
    for name, value in payload.items():
        field = spec[name]
        if value is None:
            if not field.nullable:
                raise BadRequest(_("%(field)s may not be null.", field=name), field=name)
            parsed[name] = None
        else:
            parsed[name] = field.kind.parse(value, name)
    return parsed


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(*, allow_empty: bool = False) -> dict[str, Any]:
    """The request's body as a JSON object; an empty body is ``{}`` where nothing is required."""
    raw = request.get_data(cache=True)
    if allow_empty and not raw.strip():
        return {}
    try:
        payload = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(_("The body is not valid JSON: %(reason)s", reason=exc)) from None
    if not isinstance(payload, dict):
        raise BadRequest(_("The body must be a JSON object."))
    return payload


def parse_body(spec: Spec, *, partial: bool = False) -> dict[str, Any]:
    """The request's JSON body checked against ``spec`` (``partial``: nothing is required)."""
    nothing_required = partial or not any(f.required for f in spec.values())
    return parse_fields(read_json(allow_empty=nothing_required), spec, partial=partial)


def parse_query(spec: Spec) -> dict[str, Any]:
    """The query string checked against ``spec``: unknown or repeated parameters are refused."""
    payload: dict[str, Any] = {}
    for name, values in request.args.lists():
        if name not in spec:
            raise BadRequest(_("Unknown parameter %(field)s.", field=name), field=name)
        if len(values) > 1:
            raise BadRequest(_("%(field)s is given more than once.", field=name), field=name)
        payload[name] = spec[name].kind.parse_text(values[0], name)
    for name, field in spec.items():
        if field.required and name not in payload:
            raise BadRequest(_("%(field)s is required.", field=name), field=name)
    return payload


def body_schema(spec: Spec) -> dict[str, Any]:
    """The JSON Schema of a request body described by ``spec``."""
    properties = {}
    for name, field in spec.items():
        schema = field.kind.schema()
        if field.nullable:
            schema = {"oneOf": [schema, {"type": "null"}]}
        if field.description:
            schema = {**schema, "description": field.description}
        properties[name] = schema
    required = [name for name, field in spec.items() if field.required]
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": required} if required else schema


def query_parameters(spec: Spec) -> list[dict[str, Any]]:
    """The OpenAPI parameter objects of a query string described by ``spec``."""
    return [
        {"name": name, "in": "query", "required": field.required, "schema": field.kind.schema(),
         **({"description": field.description} if field.description else {})}
        for name, field in spec.items()
    ]  # fmt: skip


def text_of(
    column: InstrumentedAttribute[Any], *, required: bool = False, nullable: bool = False,
    description: str = "",
) -> Field:  # fmt: skip
    """A text field as long as its column allows (PostgreSQL would refuse longer ones)."""
    length = getattr(column.property.columns[0].type, "length", None) or LONG_TEXT
    return Field(Text(length), required, nullable, description)


CODE_REF_FIELDS: Spec = {
    "code_system": text_of(ProcedureCode.code_system, required=True),
    "code": text_of(ProcedureCode.code, required=True),
}
