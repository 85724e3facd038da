"""QIDO-RS against a running Placa (the web door), with dicomweb-client and requests, on
SQLite and PostgreSQL: studies, series and instances, matching by keyword and by tag,
names without case or accents, wildcards, date ranges, includefield, limit/offset with the
Warning header, the JSON of Annex F, content negotiation, refusals and the audit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage
from requests import HTTPError
from sqlalchemy import select

from pacs.dicomweb.dicom_json import dataset_to_json
from pacs.dicomweb.qido import _json
from pacs.ingest import ingest
from pacs.query import (
    ATTRIBUTES,
    Level,
    Model,
    QueryOptions,
    find_archive_entries,
    plan_archive_query,
)
from ris.db import read_only, sessions
from ris.models import AuditEvent
from tests.pacs.dicom_data import make_dataset, new_uid, received
from tests.pacs.dicomweb.placa_server import Placa, start

PENA = "Peña Núñez^José María"
DUPONT = "Dupont^Hélène"


@pytest.fixture
def placa(tmp_path: Path, database_url: str) -> Iterator[Placa]:
    yield from start(tmp_path, database_url)


@pytest.fixture
def archive(placa: Placa) -> dict[str, list[str]]:
    """Three studies of two patients, stored by the real store path; their UIDs by name."""
    uids: dict[str, list[str]] = {}

    def store(label: str, series: int, count: int, **attributes: object) -> None:
        study = new_uid()
        uids[label] = [study]
        for _ in range(series):
            series_uid = new_uid()
            uids[label].append(series_uid)
            for number in range(1, count + 1):
                ds = make_dataset(study=study, series=series_uid, number=number, **attributes)
                ingest(placa.app, received(ds))

    store("pena", 2, 3, patient_id="P1", name=PENA, charset="ISO_IR 192", accession="A1")
    store("dupont", 1, 2, patient_id="P2", name=DUPONT, charset="ISO_IR 100", accession="A2",
          modality="MR", StudyDate="20261115")  # fmt: skip
    store("sr", 1, 1, patient_id="P2", name=DUPONT, charset="ISO_IR 100", accession="A3",
          modality="SR", sop_class=BasicTextSRStorage, StudyDate="20250101")  # fmt: skip
    return uids


def value(item: dict, tag: str) -> object:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def accessions(items: list[dict]) -> list[str]:
    return sorted(str(value(item, "00080050")) for item in items)


@pytest.fixture
def client(placa: Placa) -> DICOMwebClient:
    return placa.client("radiologist")


def test_search_for_studies_answers_the_default_attributes(
    placa: Placa, client: DICOMwebClient, archive: dict[str, list[str]]
) -> None:
    studies = client.search_for_studies(search_filters={"PatientID": "P1"})
    assert len(studies) == 1
    study = studies[0]
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": PENA}]}
    assert study["0020000D"] == {"vr": "UI", "Value": [archive["pena"][0]]}
    assert study["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert study["00201206"] == {"vr": "IS", "Value": [2]}  # series
    assert study["00201208"] == {"vr": "IS", "Value": [6]}  # instances
    assert study["00080020"] == {"vr": "DA", "Value": ["20261130"]}
    assert value(study, "00080056") == "ONLINE"
    # dicomweb-client sends a Host header without the port: the URL's path is what is checked.
    assert str(value(study, "00081190")).endswith(f"/dicomweb/studies/{archive['pena'][0]}")
    assert study["00080201"] == {"vr": "SH"}  # Timezone Offset From UTC: not held, empty
    assert "00080052" not in study  # C-FIND's Query/Retrieve Level is not QIDO-RS's


def test_matching_by_keyword_and_tag_names_wildcards_and_dates(
    client: DICOMwebClient, archive: dict[str, list[str]]
) -> None:
    def search(**filters: str) -> list[str]:
        return accessions(client.search_for_studies(search_filters=filters))

    assert search(**{"00100020": "P2"}) == ["A2", "A3"]
    assert search(PatientName="dupont^helene") == ["A2", "A3"]
    assert search(PatientName="PEÑA*") == ["A1"]
    assert search(PatientName="pena nunez") == ["A1"]
    assert (
        accessions(
            client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "núñez*"})
        )
        == []
    )
    assert search(AccessionNumber="A?") == ["A1", "A2", "A3"]
    assert search(StudyDate="20261101-20261130") == ["A1", "A2"]
    assert search(StudyDate="-20251231") == ["A3"]
    assert search(ModalitiesInStudy="SR") == ["A3"]
    assert search(StudyInstanceUID=f"{archive['pena'][0]},{archive['sr'][0]}") == ["A1", "A3"]
    assert search(PatientName="Smith*") == []  # 200 with []


def test_series_and_instances_at_every_path(
    placa: Placa, client: DICOMwebClient, archive: dict[str, list[str]]
) -> None:
    study, first, second = archive["pena"]
    series = client.search_for_series(study_instance_uid=study)
    assert sorted(value(s, "0020000E") for s in series) == sorted([first, second])
    assert {value(s, "00201209") for s in series} == {3}  # NumberOfSeriesRelatedInstances
    assert "00100010" not in series[0]  # within a study: the study's attributes are not added
    across = client.search_for_series(search_filters={"Modality": "MR"})
    assert [value(s, "0020000E") for s in across] == [archive["dupont"][1]]
    assert value(across[0], "00100010") == {"Alphabetic": DUPONT}  # across studies: added
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=first)
    assert sorted(value(i, "00200013") for i in instances) == [1, 2, 3]
    url = str(value(instances[0], "00081190"))
    assert f"/dicomweb/studies/{study}/series/{first}/instances/" in url
    assert len(client.search_for_instances(study_instance_uid=study)) == 6
    sr = client.search_for_instances(search_filters={"SOPClassUID": BasicTextSRStorage})
    assert [value(i, "00080050") for i in sr] == ["A3"]


def test_includefield_limit_and_offset(placa: Placa, archive: dict[str, list[str]]) -> None:
    session = placa.session("radiologist")
    url = f"{placa.base}/studies"
    got = session.get(
        url, params={"PatientID": "P1", "includefield": ["StudyDescription", "00081030,PatientAge"]}
    )
    assert got.status_code == 200 and got.headers["Content-Type"].startswith(
        "application/dicom+json"
    )
    study = got.json()[0]
    assert value(study, "00081030") == "CT ABDOMEN" and study["00101010"] == {"vr": "AS"}
    everything = session.get(url, params={"PatientID": "P1", "includefield": "all"}).json()[0]
    assert value(everything, "00201200") == 1  # NumberOfPatientRelatedStudies
    assert value(everything, "00080062") == "1.2.840.10008.5.1.4.1.1.2"  # SOPClassesInStudy
    first = session.get(url, params={"limit": "2", "AccessionNumber": "A*"})
    assert len(first.json()) == 2 and "299" in first.headers["Warning"]
    rest = session.get(url, params={"limit": "2", "offset": "2", "AccessionNumber": "A*"})
    assert len(rest.json()) == 1 and "Warning" not in rest.headers
    seen = accessions(first.json() + rest.json())
    assert seen == ["A1", "A2", "A3"]


def test_refusals(placa: Placa, archive: dict[str, list[str]]) -> None:
    session = placa.session("radiologist")
    url = f"{placa.base}/studies"
    for params, reason in [
        ({"StudyDate": "20261345"}, "StudyDate"),
        ({"NoSuchAttribute": "1"}, "NoSuchAttribute"),
        ({"limit": "-1"}, "limit"),
        ({"fuzzymatching": "maybe"}, "fuzzy"),
    ]:
        refused = session.get(url, params=params)
        assert refused.status_code == 400 and reason in refused.json()["error"]
    xml = session.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert xml.status_code == 406
    assert session.get(f"{placa.base}/studies/not-a-uid/series").status_code == 400
    ignored = session.get(url, params={"PatientAge": "045Y"})
    assert ignored.status_code == 200 and "PatientAge" in ignored.headers["Warning"]
    assert placa.session("billing").get(url).status_code == 403
    with pytest.raises(HTTPError):
        DICOMwebClient(placa.base).search_for_studies()  # no credentials


def test_every_search_is_audited(placa: Placa, client: DICOMwebClient,
                                 archive: dict[str, list[str]]) -> None:  # fmt: skip
    client.search_for_studies(search_filters={"PatientID": "P2"})
    with sessions(placa.app)() as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.action == "dicomweb.search"))
        found = [(e.actor, e.object_type, e.detail) for e in events]
    assert len(found) == 1
    actor, level, detail = found[0]
    assert actor.startswith("radiologist") and level == "study"
    assert '"PatientID": ["P2"]' in (detail or "") and '"answers": 2' in (detail or "")


def test_the_fast_json_is_the_annex_f_converters(
    placa: Placa, archive: dict[str, list[str]]
) -> None:
    """qido writes JSON straight from the answer elements: the same as pacs.dicomweb.dicom_json
    writes from the Dataset of the same answer."""
    for level in (Level.STUDY, Level.SERIES, Level.IMAGE):
        request = Dataset()
        for keyword, attribute in ATTRIBUTES.items():
            if attribute.level <= level:
                setattr(request, keyword, None)
        request.PatientAge = None
        request.OtherPatientIDsSequence = []
        options = QueryOptions(hierarchical=False)
        query = plan_archive_query(request, Model.STUDY_ROOT, level, options)
        with read_only(placa.app) as db:
            answers = list(find_archive_entries(db, query).answers())
        assert answers
        for answer in answers:
            expected = dataset_to_json(answer.dataset())
            for key in ("00080052", "00080054"):
                expected.pop(key)
            assert _json(answer.elements, lambda values: "") == expected
