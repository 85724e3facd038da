"""The OpenAPI 3.1 document of /api, written by hand in this one place.

Request bodies and query parameters come from the specs the routes parse with
(ris.api_schemas), and each operation's roles from its route's declaration, so neither can
drift from what the API does; tests check that every /api route is listed, and only those.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Response, current_app, jsonify

from ris.api import bp
from ris.api.fields import (
    ACCESSION_QUERY,
    BOARD_QUERY,
    BOOKING_FIELDS,
    CANCEL_FIELDS,
    LIST_QUERY,
    MERGE_FIELDS,
    NEW_PATIENT_FIELDS,
    NO_FIELDS,
    ORDER_FIELDS,
    PATIENT_FIELDS,
    PROCEDURE_FIELDS,
    ROOM_FIELDS,
    SEARCH_QUERY,
    SLOTS_QUERY,
)
from ris.api_schemas import Spec, body_schema, query_parameters
from ris.auth import ALL_ROLES, signed_in
from ris.models import ExamStatus, PatientClass, Priority, Sex

Schema = dict[str, Any]
API_VERSION = "1.0.0"

DESCRIPTION = """\
Placa's JSON API for the front desk: patients, orders, exams, bookings, the day board,
rooms and the procedure catalog. It calls the same services as Placa's screens, with the
same rules, and its changes are audited the same way; reads of patient data are audited too.

**Authentication.** Sign in at `/login`; the API uses the session cookie
(`{cookie}`). Every operation lists the roles it needs (`x-placa-roles`). Anonymous
requests get 401, signed-in users without a needed role 403.

**Cross-site request forgery.** The API takes no form token. Instead every POST, PUT,
PATCH or DELETE must send `Content-Type: application/json`; a request without a body may
send `X-Requested-With: XMLHttpRequest` instead. Browsers cannot send either cross-site
without a CORS preflight, which Placa never grants, so anything else is refused with 415.

**Input.** Bodies are JSON objects. Unknown fields and query parameters are refused (400),
so typos do not pass unnoticed, as are malformed JSON and values of the wrong type. On PUT,
fields left out keep their values; `null` clears a nullable field.

**Errors** are `{{"error": message, "status": code, "field": name}}` (`field` when one
field is at fault): 400 malformed request, 401, 403, 404 unknown id, 409 conflict (double
booking, a status change the ladder forbids), 415 not JSON, 422 values the rules refuse.

**Values.** Instants are ISO 8601 in UTC (`2025-03-14T08:30:00Z`); inputs need an offset
(`Z`, `+01:00`). Dates are `YYYY-MM-DD`; a room's opening hours are local times of the site.
Enumerations are their values (DICOM and HL7 defined terms). Money is a decimal string.
"""

ERRORS = {
    400: "Malformed JSON, unknown field or parameter, or a value of the wrong type.",
    401: "Not signed in.",
    403: "Signed in without a role this operation needs.",
    404: "No record with this id.",
    409: "Conflicts with the current state (double booking, status ladder, duplicate).",
    415: "A write without a JSON content type (see Cross-site request forgery).",
    422: "The values break a rule of the department (the message says which).",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _null(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema]) -> Schema:
    """An answer object: every property is always present (``null`` when empty)."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def _list(key: str, item: str, **extra: Schema) -> Schema:
    return _object({**extra, key: {"type": "array", "items": _ref(item)}})


def _enum(values: type[Any]) -> Schema:
    return {"type": "string", "enum": [member.value for member in values]}


ID = {"type": "integer"}
TEXT = {"type": "string"}
INSTANT = {"type": "string", "format": "date-time"}


def _body_properties(spec: Spec) -> dict[str, Schema]:
    return dict(body_schema(spec)["properties"])


def schemas() -> dict[str, Schema]:
    """The components: what each resource looks like in answers."""
    summary = {
        "id": ID, "mrn": TEXT, "mrn_issuer": TEXT, "family_name": TEXT, "given_name": TEXT,
        "display_name": {"type": "string", "description": "FAMILY, Given Middle"},
        "birth_date": _null({"type": "string", "format": "date"}), "sex": _null(_enum(Sex)),
        "has_alerts": {"type": "boolean"}, "merged_into_id": _null(ID),
    }  # fmt: skip
    procedure = {name: _body_properties(PROCEDURE_FIELDS)[name]
                 for name in ("code_system", "code", "description", "modality")}  # fmt: skip
    return {
        "Error": {
            "type": "object",
            "properties": {"error": TEXT, "status": ID, "field": TEXT},
            "required": ["error", "status"],
        },
        "PatientSummary": _object(summary),
        "Patient": _object(
            {
                **summary,
                **_body_properties(PATIENT_FIELDS),
                "created_at": INSTANT,
                "updated_at": INSTANT,
            }
        ),
        "PatientMerge": _object(
            {
                "id": ID,
                "surviving_id": ID,
                "merged_id": ID,
                "merged_at": INSTANT,
                "merged_by": TEXT,
                "moved": {
                    "type": "object",
                    "description": "What moved, by kind: record ids.",
                    "additionalProperties": {"type": "array", "items": ID},
                },
                "undone_at": _null(INSTANT),
                "undone_by": _null(TEXT),
            }
        ),
        "Order": _object(
            {
                "id": ID,
                "patient_id": ID,
                "placer_order_number": _null(TEXT),
                "placer_issuer": _null(TEXT),
                "ordering_physician": TEXT,
                "referring_physician": TEXT,
                "reason": TEXT,
                "icd10_codes": {"type": "array", "items": TEXT},
                "priority": _enum(Priority),
                "patient_class": _enum(PatientClass),
                "created_at": INSTANT,
                "created_by": TEXT,
                "exams": {"type": "array", "items": _ref("Exam")},
            }
        ),
        "Exam": _object(
            {
                "id": ID,
                "order_id": ID,
                "accession_number": TEXT,
                "requested_procedure_id": TEXT,
                "study_instance_uid": TEXT,
                "description": TEXT,
                "status": _enum(ExamStatus),
                "status_changed_at": INSTANT,
                "arrived_at": _null(INSTANT),
                "priority": _enum(Priority),
                "patient": _ref("PatientSummary"),
                "procedure_code": _object({"id": ID, **procedure}),
                "booking": _null(_ref("Booking")),
            }
        ),
        "Booking": _object(
            {
                "step_id": {"type": "string", "description": "Scheduled Procedure Step ID"},
                "room_id": ID,
                "room_code": TEXT,
                "modality": TEXT,
                "station_ae_title": _null(TEXT),
                "station_name": _null(TEXT),
                "start": INSTANT,
                "end": INSTANT,
            }
        ),
        "Slot": _object({"room_id": ID, "room_code": TEXT, "start": INSTANT, "end": INSTANT}),
        "Room": _object({"id": ID, **_body_properties(ROOM_FIELDS)}),
        "ProcedureCode": _object(
            {
                "id": ID,
                **_body_properties(PROCEDURE_FIELDS),
                "technical_charge": {"type": "string", "examples": ["120.50"]},
                "professional_charge": {"type": "string", "examples": ["0.00"]},
                "rooms": {"type": "array", "items": TEXT, "description": "Room codes."},
            }
        ),
        "Board": _list(
            "exams", "Exam", date={"type": "string", "format": "date"}, room=_null(TEXT)
        ),
    }


def _operation(
    app: Flask, path: str, method: str, endpoint: str, summary: str, answer: Schema,
    *, status: int = 200, query: Spec | None = None, body: Spec | None = None,
    errors: tuple[int, ...] = (),
) -> Schema:  # fmt: skip
    allowed = sorted(getattr(app.view_functions[endpoint], "placa_roles", ALL_ROLES))
    codes = {401, *errors}
    codes |= {403} if set(allowed) != ALL_ROLES else set()
    codes |= {404} if "{" in path else set()
    codes |= {400} if query is not None or body is not None else set()
    codes |= {400, 415} if method in ("post", "put") else set()
    operation: Schema = {
        "operationId": endpoint.removeprefix("api."),
        "summary": summary,
        "x-placa-roles": allowed,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": ID}
            for name in re.findall(r"{(\w+)}", path)
        ] + query_parameters(query or {}),
        "responses": {
            str(status): {"description": summary, "content": _json(answer)},
            **{str(code): {"$ref": f"#/components/responses/{code}"} for code in sorted(codes)},
        },
    }  # fmt: skip
    if body is not None:
        required = any(f.required for f in body.values())
        operation["requestBody"] = {"required": required, "content": _json(body_schema(body))}
    return operation


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def paths(app: Flask) -> dict[str, dict[str, Schema]]:
    """Every /api route: (path, method, endpoint, summary, answer, options)."""
    rows: list[tuple[str, str, str, str, Schema, dict[str, Any]]] = [
        ("/api/openapi.json", "get", "api.openapi_document", "This document",
         {"type": "object"}, {}),
        ("/api/patients", "get", "api.search_patients", "Search patients",
         _list("patients", "PatientSummary"), {"query": SEARCH_QUERY}),
        ("/api/patients", "post", "api.create_patient", "Register a patient", _ref("Patient"),
         {"status": 201, "body": NEW_PATIENT_FIELDS, "errors": (409, 422)}),
        ("/api/patients/{patient_id}", "get", "api.get_patient", "A patient", _ref("Patient"),
         {}),
        ("/api/patients/{patient_id}", "put", "api.update_patient", "Change a patient",
         _ref("Patient"), {"body": PATIENT_FIELDS, "errors": (422,)}),
        ("/api/patients/{patient_id}/merge", "post", "api.merge_patient",
         "Merge the duplicate merged_id into this patient", _ref("PatientMerge"),
         {"status": 201, "body": MERGE_FIELDS, "errors": (409, 422)}),
        ("/api/patient-merges/{merge_id}/undo", "post", "api.undo_merge", "Undo a merge",
         _ref("PatientMerge"), {"body": NO_FIELDS, "errors": (409,)}),
        ("/api/orders", "post", "api.create_order", "Place an order (one exam per procedure)",
         _ref("Order"), {"status": 201, "body": ORDER_FIELDS, "errors": (409, 422)}),
        ("/api/orders/{order_id}", "get", "api.get_order", "An order with its exams",
         _ref("Order"), {}),
        ("/api/exams", "get", "api.find_exams", "Find an exam by accession number",
         _list("exams", "Exam"), {"query": ACCESSION_QUERY}),
        ("/api/exams/{exam_id}", "get", "api.get_exam", "An exam", _ref("Exam"), {}),
        ("/api/exams/{exam_id}/check-in", "post", "api.check_in", "Check the patient in",
         _ref("Exam"), {"body": NO_FIELDS, "errors": (409,)}),
        ("/api/exams/{exam_id}/cancel", "post", "api.cancel", "Cancel an exam", _ref("Exam"),
         {"body": CANCEL_FIELDS, "errors": (409, 422)}),
        ("/api/exams/{exam_id}/no-show", "post", "api.no_show", "The patient did not come",
         _ref("Exam"), {"body": NO_FIELDS, "errors": (409,)}),
        ("/api/exams/{exam_id}/booking", "post", "api.book", "Book an exam", _ref("Exam"),
         {"status": 201, "body": BOOKING_FIELDS, "errors": (409, 422)}),
        ("/api/exams/{exam_id}/booking", "put", "api.reschedule", "Reschedule an exam",
         _ref("Exam"), {"body": BOOKING_FIELDS, "errors": (409, 422)}),
        ("/api/board", "get", "api.day_board", "A day's booked exams", _ref("Board"),
         {"query": BOARD_QUERY, "errors": (422,)}),
        ("/api/rooms", "get", "api.rooms", "Rooms", _list("rooms", "Room"),
         {"query": LIST_QUERY}),
        ("/api/rooms", "post", "api.create_room", "Add a room", _ref("Room"),
         {"status": 201, "body": ROOM_FIELDS, "errors": (422,)}),
        ("/api/rooms/{room_id}", "get", "api.get_room", "A room", _ref("Room"), {}),
        ("/api/rooms/{room_id}", "put", "api.update_room", "Change a room", _ref("Room"),
         {"body": ROOM_FIELDS, "errors": (422,)}),
        ("/api/procedure-codes", "get", "api.procedure_codes", "The procedure catalog",
         _list("procedure_codes", "ProcedureCode"), {"query": LIST_QUERY}),
        ("/api/procedure-codes", "post", "api.create_procedure_code", "Add a procedure code",
         _ref("ProcedureCode"), {"status": 201, "body": PROCEDURE_FIELDS, "errors": (422,)}),
        ("/api/procedure-codes/{code_id}", "get", "api.get_procedure_code", "A procedure code",
         _ref("ProcedureCode"), {}),
        ("/api/procedure-codes/{code_id}", "put", "api.update_procedure_code",
         "Change a procedure code", _ref("ProcedureCode"),
         {"body": PROCEDURE_FIELDS, "errors": (422,)}),
        ("/api/procedure-codes/{code_id}/free-slots", "get", "api.free_slots",
         "The earliest free slots for a procedure", _list("slots", "Slot"),
         {"query": SLOTS_QUERY, "errors": (422,)}),
    ]  # fmt: skip
    document: dict[str, dict[str, Schema]] = {}
    for path, method, endpoint, summary, answer, options in rows:
        operation = _operation(app, path, method, endpoint, summary, answer, **options)
        document.setdefault(path, {})[method] = operation
    return document


def build_document(app: Flask) -> Schema:
    """The whole OpenAPI document for ``app``."""
    cookie = app.config.get("SESSION_COOKIE_NAME", "session")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Placa API",
            "version": API_VERSION,
            "description": DESCRIPTION.format(cookie=cookie),
        },
        "security": [{"session": []}],
        "paths": paths(app),
        "components": {
            "schemas": schemas(),
            "responses": {
                str(code): {"description": text, "content": _json(_ref("Error"))}
                for code, text in ERRORS.items()
            },
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie,
                    "description": "The session cookie set by signing in at /login.",
                },
            },
        },
    }


@bp.get("/openapi.json")
@signed_in
def openapi_document() -> Response:
    """This API's OpenAPI 3.1 document."""
    return jsonify(build_document(current_app))
