"""Tables owned by the RIS, one module per area; import them from here."""

from ris.models.accounts import ROLES, ApiToken, AuditEvent, Role, User, UserSession, user_roles
from ris.models.catalog import ProcedureCode, Room, procedure_rooms
from ris.models.messages import HL7Destination, InboundMessage, OutboundMessage
from ris.models.orders import (
    Counter,
    Order,
    RequestedProcedure,
    ScheduledProcedureStep,
    StatusChange,
)
from ris.models.patients import Patient, PatientMerge, PatientNameToken
from ris.models.types import (
    HOLDS_SLOT,
    ExamStatus,
    MRISafety,
    PatientClass,
    PregnancyStatus,
    Priority,
    Sex,
)

__all__ = [
    "HOLDS_SLOT", "ROLES", "ApiToken", "AuditEvent", "Counter", "ExamStatus", "HL7Destination",
    "InboundMessage", "MRISafety", "Order", "OutboundMessage", "Patient",
    "PatientClass", "PatientMerge", "PatientNameToken", "PregnancyStatus", "Priority",
    "ProcedureCode", "RequestedProcedure", "Role", "Room", "ScheduledProcedureStep", "Sex",
    "StatusChange", "User", "UserSession", "procedure_rooms", "user_roles",
]  # fmt: skip
