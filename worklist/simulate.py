"""A modality emulator for go-live testing: what a scanner does with the worklist, over DICOM.

It talks to Placa only from the outside, as a real modality does (IHE Scheduled
Workflow, RAD-5/6/7/8): query the Modality Worklist (C-FIND, PS3.4 K), pick the
step, report it started (MPPS N-CREATE IN PROGRESS, PS3.4 F.7), acquire and send its
images (C-STORE, PS3.4 B) to the archive, report it done (MPPS N-SET COMPLETED, or
DISCONTINUED with a reason). ``flask --app wsgi simulate-modality`` (worklist.cli) drives it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind
from pynetdicom.status import code_to_category

from ris.dicom_door import set_nodelay
from ris.identifiers import new_uid
from worklist.simulate_images import (
    CHARACTER_SET,
    PerformedStep,
    SeriesPlan,
    default_shape,
    image_dataset,
    scheduled_step,
    series_description,
    sop_class_for,
)
from worklist.simulate_mpps import (
    EQUIPMENT_FAILURE,
    StoredSeries,
    mpps_final,
    mpps_in_progress,
)

logger = logging.getLogger(__name__)

Report = Callable[[str], None]
ACSE_TIMEOUT, DIMSE_TIMEOUT, NETWORK_TIMEOUT = 30, 60, 60
PEER_PATTERN = re.compile(
    r"^(?P<ae>[^@\\]{1,16})@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d{1,5})$"
)
STORE_WARNINGS = {0xB000, 0xB006, 0xB007}  # coercion, elements discarded, dataset mismatch


class SimulationError(Exception):
    """The simulated modality could not go on; the message says what the peer answered."""


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """``AE@HOST:PORT`` (an IPv6 host in brackets) as a :class:`Peer`."""
    match = PEER_PATTERN.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{text!r} is not AE@HOST:PORT (AE title at most 16 characters)")
    return Peer(match["ae"].strip(), match["host"].strip("[]"), int(match["port"]))


@dataclass(frozen=True)
class Settings:
    """What the simulated modality is, where it finds Placa and what it does."""

    station_ae_title: str  # the modality's calling AE: a room's AE title
    placa: Peer  # the Modality Worklist and MPPS SCP
    store_to: Peer  # where the images go
    day: date
    zone: ZoneInfo  # the site's: DICOM dates and times are local
    uid_root: str = ""
    modality: str = ""  # "" asks for every modality
    accession: str = ""  # "" takes the first step of the day
    every_step: bool = False
    series: int | None = None  # None: the modality's usual number
    images: int | None = None
    mpps: bool = True
    discontinue: str | None = None  # a reason: end with DISCONTINUED instead of COMPLETED


@dataclass
class StepResult:
    """What the modality did for one worklist item."""

    accession_number: str
    patient_name: str
    study_instance_uid: str
    mpps_uid: str | None
    final_status: str | None  # COMPLETED, DISCONTINUED, or None without MPPS
    series: list[StoredSeries]

    @property
    def images(self) -> int:
        return sum(len(series.instances) for series in self.series)


# ------------------------------------------------------------------------------ associations


@contextmanager
def associated(calling_ae: str, peer: Peer, sop_classes: Sequence[str], what: str
               ) -> Iterator[Association]:  # fmt: skip
    """An established association with ``peer`` for ``sop_classes``, or a SimulationError."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout, ae.dimse_timeout = ACSE_TIMEOUT, DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    for uid in sop_classes:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    seen: list[object] = []  # the connection, then a rejection if one comes

    def connected(event: Event) -> None:
        set_nodelay(event)
        seen.append(event)

    def remember_rejection(event: Event) -> None:
        primitive = event.primitive  # type: ignore[attr-defined]
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
            seen.append(primitive)

    handlers = [(evt.EVT_CONN_OPEN, connected), (evt.EVT_ACSE_RECV, remember_rejection)]
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=handlers)
    if not assoc.is_established:
        if not seen:
            raise SimulationError(f"could not connect to {peer} for the {what} association")
        rejection = [item for item in seen if isinstance(item, A_ASSOCIATE)]
        raise SimulationError(_refusal(assoc, peer, what, rejection))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _refusal(assoc: Association, peer: Peer, what: str, rejection: list[A_ASSOCIATE]) -> str:
    if rejection:
        reason = rejection[0]
        return (f"{peer} rejected the {what} association ({reason.result_str}, "
                f"{reason.source_str}: {reason.reason_str})")  # fmt: skip
    if assoc.rejected_contexts:
        names = ", ".join(sorted({str(cx.abstract_syntax.name) for cx in assoc.rejected_contexts}))
        return f"{peer} accepted the association but not {names}: it offers no {what} service"
    return f"{peer} aborted the {what} association (is it a DICOM peer? check host and port)"


def park_reactor(assoc: Association) -> None:
    """Before a request that follows another on the same association: make pynetdicom wait
    until its reactor thread is really paused.

    pynetdicom 3.0.4 pauses the requestor's reactor for each request, but trusts a flag the
    reactor set before the previous request ended: a reactor woken by that end and not yet
    scheduled passes for paused, then takes one response off the queue ("Received
    unexpected ... service message") and that response is lost. Clearing the flag makes the
    request wait for the reactor to pause again (kill() sets it, so a dead one cannot hang).
    """
    if assoc.is_established:
        assoc._is_paused = False


def check_status(status: Dataset, what: str, peer: Peer) -> int:
    """The status code of a final response; a SimulationError unless Success or Warning."""
    code = status.get("Status")
    if code is None:
        raise SimulationError(f"{what}: no response from {peer} (association lost or timed out)")
    category = code_to_category(int(code))
    comment = status.get("ErrorComment", "")
    if category == "Warning":
        logger.warning("%s: warning 0x%04X from %s %s", what, code, peer, comment)
    elif category != "Success":
        detail = f": {comment}" if comment else ""
        raise SimulationError(f"{what} refused by {peer}: {category} 0x{code:04X}{detail}")
    return int(code)


# ---------------------------------------------------------------------------------- worklist

WORKLIST_RETURN_KEYS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientWeight", "MedicalAlerts", "Allergies", "PregnancyStatus", "AccessionNumber",
    "ReferringPhysicianName", "RequestingPhysician", "StudyInstanceUID",
    "RequestedProcedureID", "RequestedProcedureDescription", "RequestedProcedurePriority",
    "AdmissionID", "CurrentPatientLocation",
)  # fmt: skip
WORKLIST_SEQUENCE_KEYS = ("RequestedProcedureCodeSequence", "ReferencedStudySequence",
                          "ReferencedPatientSequence")  # fmt: skip
STEP_RETURN_KEYS = (
    "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "ScheduledStationName",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStatus",
)  # fmt: skip


def worklist_query(station_ae: str, day: date, modality: str = "", accession: str = "") -> Dataset:
    """The C-FIND identifier a modality sends: its AE, the day, its modality; the rest empty
    (universal matching: "return this")."""
    query = Dataset()
    query.SpecificCharacterSet = CHARACTER_SET
    for keyword in WORKLIST_RETURN_KEYS:
        setattr(query, keyword, None)  # zero length, whatever the VR
    for keyword in WORKLIST_SEQUENCE_KEYS:
        setattr(query, keyword, DicomSequence())
    query.AccessionNumber = accession or None
    step = Dataset()
    step.ScheduledStationAETitle = station_ae
    step.ScheduledProcedureStepStartDate = day.strftime("%Y%m%d")
    step.Modality = modality or None
    for keyword in STEP_RETURN_KEYS:
        setattr(step, keyword, None)
    step.ScheduledProtocolCodeSequence = DicomSequence()
    query.ScheduledProcedureStepSequence = DicomSequence([step])
    return query


def find_worklist(calling_ae: str, peer: Peer, query: Dataset) -> list[Dataset]:
    """Every worklist item ``peer`` answers for ``query`` (one association)."""
    items: list[Dataset] = []
    with associated(calling_ae, peer, [ModalityWorklistInformationFind], "Modality Worklist") as a:
        for status, identifier in a.send_c_find(query, ModalityWorklistInformationFind):
            code = status.get("Status")
            if code is not None and code_to_category(int(code)) == "Pending":
                if identifier is not None:
                    identifier.decode()  # text in Unicode, whatever character set it came in
                    items.append(identifier)
                continue
            check_status(status, "Modality Worklist query", peer)
    return items


def _start(item: Dataset) -> str:
    sps = scheduled_step(item)
    day = sps.get("ScheduledProcedureStepStartDate", "")
    return f"{day}{sps.get('ScheduledProcedureStepStartTime', '')}"


def choose_steps(items: list[Dataset], settings: Settings) -> list[Dataset]:
    """The step(s) to perform: the accession asked for, every one, or the day's first."""
    chosen = sorted(items, key=_start)
    if settings.accession:
        chosen = [item for item in chosen if item.get("AccessionNumber") == settings.accession]
    if not chosen:
        asked = f", accession {settings.accession}" if settings.accession else ""
        modality = f", modality {settings.modality}" if settings.modality else ""
        raise SimulationError(
            f"no worklist item for {settings.station_ae_title} on {settings.day.isoformat()}"
            f"{modality}{asked} ({len(items)} answers from {settings.placa})"
        )
    return chosen if settings.every_step else chosen[:1]


# -------------------------------------------------------------------------------------- MPPS


def send_n_create(settings: Settings, dataset: Dataset, uid: str) -> None:
    with associated(settings.station_ae_title, settings.placa,
                    [ModalityPerformedProcedureStep], "MPPS") as assoc:  # fmt: skip
        status, _ = assoc.send_n_create(dataset, ModalityPerformedProcedureStep, uid)
    check_status(status, "MPPS N-CREATE", settings.placa)


def send_n_set(settings: Settings, dataset: Dataset, uid: str) -> None:
    with associated(settings.station_ae_title, settings.placa,
                    [ModalityPerformedProcedureStep], "MPPS") as assoc:  # fmt: skip
        status, _ = assoc.send_n_set(dataset, ModalityPerformedProcedureStep, uid)
    check_status(status, f"MPPS N-SET {dataset.PerformedProcedureStepStatus}", settings.placa)


# ----------------------------------------------------------------------------- performing


def performed_step(settings: Settings, item: Dataset, modality: str) -> PerformedStep:
    sps = scheduled_step(item)
    study_uid = str(item.get("StudyInstanceUID", "") or "")
    if not study_uid:
        study_uid = new_uid(settings.uid_root)
        logger.warning("Worklist item %s has no Study Instance UID: generated %s",
                       item.get("AccessionNumber", ""), study_uid)  # fmt: skip
    protocols = sps.get("ScheduledProtocolCodeSequence") or []
    protocol = (protocols[0].get("CodeMeaning", "") if protocols else "") or str(
        sps.get("ScheduledProcedureStepDescription", "") or modality
    )
    return PerformedStep(
        modality=modality, station_ae_title=settings.station_ae_title,
        station_name=str(sps.get("ScheduledStationName", "") or settings.station_ae_title),
        started=datetime.now(settings.zone), pps_id=f"PPS{secrets.token_hex(6).upper()}",
        mpps_uid=new_uid(settings.uid_root) if settings.mpps else None,
        study_instance_uid=study_uid, protocol_name=protocol,
    )  # fmt: skip


def series_plans(settings: Settings, modality: str) -> list[SeriesPlan]:
    usual_series, usual_images = default_shape(modality)
    count = usual_series if settings.series is None else settings.series
    images = usual_images if settings.images is None else settings.images
    frame = new_uid(settings.uid_root)
    return [SeriesPlan(number, new_uid(settings.uid_root), series_description(modality, number),
                       images, frame) for number in range(1, count + 1)]  # fmt: skip


def store_series(assoc: Association, settings: Settings, item: Dataset, step: PerformedStep,
                 stored: StoredSeries) -> None:  # fmt: skip
    """Acquire and send the series' images one by one, recording each one acknowledged."""
    for index in range(1, stored.plan.images + 1):
        image = image_dataset(item, step, stored.plan, index, new_uid(settings.uid_root),
                              datetime.now(settings.zone))  # fmt: skip
        park_reactor(assoc)
        status = assoc.send_c_store(image)
        what = f"C-STORE of image {index} of series {stored.plan.number}"
        code = check_status(status, what, settings.store_to)
        if code in STORE_WARNINGS:
            logger.warning("%s stored with warning 0x%04X", what, code)
        stored.instances.append((str(image.SOPClassUID), str(image.SOPInstanceUID)))


def perform(settings: Settings, item: Dataset, report: Report) -> StepResult:
    """Do one worklist item: MPPS IN PROGRESS, the images, MPPS COMPLETED (or DISCONTINUED)."""
    modality = str(scheduled_step(item).get("Modality", "") or settings.modality or "OT")
    accession = str(item.get("AccessionNumber", ""))
    with associated(settings.station_ae_title, settings.store_to, [sop_class_for(modality)],
                    "storage") as store:  # fmt: skip
        step = performed_step(settings, item, modality)
        if step.mpps_uid:
            send_n_create(settings, mpps_in_progress(item, step), step.mpps_uid)
            report(f"  MPPS {step.mpps_uid} IN PROGRESS")
        stored = [StoredSeries(plan) for plan in series_plans(settings, modality)]
        try:
            for series in stored:
                store_series(store, settings, item, step, series)
                report(f"  series {series.plan.number} ({series.plan.description}): "
                       f"{len(series.instances)} images stored to {settings.store_to}")  # fmt: skip
        except SimulationError as exc:
            _discontinue_after_failure(settings, item, step, stored, exc, report)
            raise
    final = _finish(settings, item, step, stored, report)
    return StepResult(accession, str(item.get("PatientName", "")), step.study_instance_uid,
                      step.mpps_uid, final, stored)  # fmt: skip


def _finish(settings: Settings, item: Dataset, step: PerformedStep, stored: list[StoredSeries],
            report: Report) -> str | None:  # fmt: skip
    if not step.mpps_uid:
        return None
    final = mpps_final(item, step, stored, settings.store_to.ae_title,
                       datetime.now(settings.zone), settings.discontinue)  # fmt: skip
    send_n_set(settings, final, step.mpps_uid)
    report(f"  MPPS {step.mpps_uid} {final.PerformedProcedureStepStatus}")
    return str(final.PerformedProcedureStepStatus)


def _discontinue_after_failure(settings: Settings, item: Dataset, step: PerformedStep,
                               stored: list[StoredSeries], failure: SimulationError,
                               report: Report) -> None:  # fmt: skip
    """A modality whose images cannot be sent ends its step as an equipment failure."""
    if not step.mpps_uid:
        return
    final = mpps_final(item, step, stored, settings.store_to.ae_title,
                       datetime.now(settings.zone), EQUIPMENT_FAILURE)  # fmt: skip
    final.CommentsOnThePerformedProcedureStep = str(failure)[:10240]
    try:
        send_n_set(settings, final, step.mpps_uid)
        report(f"  MPPS {step.mpps_uid} DISCONTINUED (equipment failure)")
    except SimulationError as exc:
        logger.error("Could not discontinue MPPS %s: %s", step.mpps_uid, exc)


def simulate(settings: Settings, report: Report) -> list[StepResult]:
    """Query the worklist and perform the chosen step(s); a SimulationError stops it."""
    query = worklist_query(settings.station_ae_title, settings.day, settings.modality,
                           settings.accession)  # fmt: skip
    items = find_worklist(settings.station_ae_title, settings.placa, query)
    logger.info("Worklist for %s on %s: %d items", settings.station_ae_title, settings.day,
                len(items))  # fmt: skip
    report(f"Worklist of {settings.station_ae_title} on {settings.day.isoformat()} "
           f"from {settings.placa}: {len(items)} item(s)")  # fmt: skip
    results = []
    for item in choose_steps(items, settings):
        report(f"Accession {item.get('AccessionNumber', '')}, {item.get('PatientName', '')}, "
               f"{scheduled_step(item).get('ScheduledProcedureStepDescription', '')}")  # fmt: skip
        results.append(perform(settings, item, report))
        logger.info("Performed %s: %d images, MPPS %s", results[-1].accession_number,
                    results[-1].images, results[-1].final_status)  # fmt: skip
    return results
