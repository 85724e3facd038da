"""WADO-RS /rendered and /thumbnail (PS3.18 10.4.1.1.3-4): images of stored instances,
content negotiation, parameters, errors, roles and the audit log, on both backends; and a
real client (dicomweb-client) against the web door."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from pacs import storage
from pacs.rendering import THUMBNAIL_SIZE
from ris.db import transaction
from ris.models import AuditEvent
from ris.site import site_of
from tests.conftest import sign_in
from tests.pacs.dicom_data import make_dataset, new_uid, received
from tests.pacs.dicomweb.placa_server import Placa, start

BASE = "/dicomweb"


def store(app: Flask, pixels: np.ndarray, **fields: object) -> str:
    """Store one instance with ``pixels`` (rows, columns) or (frames, rows, columns)."""
    frames = pixels if pixels.ndim == 3 else pixels[None]
    extra: dict[str, object] = {"WindowCenter": "2048", "WindowWidth": "4096", **fields}
    if len(frames) > 1:
        extra["NumberOfFrames"] = len(frames)
    ds = make_dataset(rows=frames.shape[1], PixelData=frames.astype(np.uint16).tobytes(),
                      **extra)  # type: ignore[arg-type]  # fmt: skip
    ds.Columns = frames.shape[2]
    root = storage.archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        storage.store_instance(db, root, received(ds), zone=site_of(app).zone)
    return str(ds.SOPInstanceUID)


@pytest.fixture
def study(app: Flask) -> dict[str, str]:
    """A study of two series: CT with three single-frame images of uniform values 0, 2048,
    4095 (instance numbers 1..3), and one two-frame instance (frames 1000 and 3000)."""
    uids = {"study": new_uid(), "ct": new_uid(), "mf": new_uid()}
    for number, value in enumerate((0, 2048, 4095), start=1):
        uids[f"ct{number}"] = store(app, np.full((32, 64), value), study=uids["study"],
                                    series=uids["ct"], number=number, SeriesNumber=1)  # fmt: skip
    frames = np.stack([np.full((16, 16), 1000), np.full((16, 16), 3000)])
    uids["mf1"] = store(app, frames, study=uids["study"], series=uids["mf"], SeriesNumber=2)
    return uids


@pytest.fixture
def reader(app: Flask, make_user) -> FlaskClient:  # noqa: ANN001
    client = app.test_client()
    sign_in(client, make_user("radiologist"))
    return client


def url(uids: dict[str, str], series: str | None = None, instance: str | None = None,
        tail: str = "rendered") -> str:  # fmt: skip
    path = f"{BASE}/studies/{uids['study']}"
    if series:
        path += f"/series/{uids[series]}"
    if instance:
        path += f"/instances/{uids[instance]}"
    return f"{path}/{tail}"


def image(data: bytes, fmt: str = "JPEG") -> np.ndarray:
    opened = Image.open(BytesIO(data))
    assert opened.format == fmt
    return np.asarray(opened).astype(int)


def parts(response_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The parts of a multipart/related body: (Content-Type, payload)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response_type)
    assert boundary, response_type
    found = []
    for chunk in body.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, payload = chunk.partition(b"\r\n\r\n")
        kind = re.search(rb"Content-Type: *([^\r\n]+)", head)
        assert kind and payload.endswith(b"\r\n")
        found.append((kind.group(1).decode(), payload[:-2]))
    return found


# --- Images -----------------------------------------------------------------------------


def test_an_instance_renders_as_jpeg_by_default(reader: FlaskClient, study: dict) -> None:
    for accept in (None, "*/*", "image/*", "image/jpeg"):
        headers = {"Accept": accept} if accept else {}
        response = reader.get(url(study, "ct", "ct2"), headers=headers)
        assert response.status_code == 200, response.data
        assert response.mimetype == "image/jpeg"
        pixels = image(response.data)
        assert pixels.shape == (32, 64) and abs(pixels.mean() - 128) < 2


def test_png_by_accept_header_or_parameter_with_a_window(reader: FlaskClient, study: dict) -> None:
    by_header = reader.get(url(study, "ct", "ct2") + "?window=2048,1,linear",
                           headers={"Accept": "image/png"})  # fmt: skip
    assert by_header.mimetype == "image/png"
    assert (image(by_header.data, "PNG") == 255).all()  # a threshold at 2047.5
    by_parameter = reader.get(url(study, "ct", "ct1") + "?accept=image/png&window=-100,50",
                              headers={"Accept": "image/jpeg"})  # fmt: skip
    assert by_parameter.mimetype == "image/png"
    assert (image(by_parameter.data, "PNG") == 255).all()  # 0 is far above -100


def test_the_preferred_acceptable_type_wins(reader: FlaskClient, study: dict) -> None:
    accept = "application/dicom, image/png;q=0.5, image/gif;q=0.9"
    response = reader.get(url(study, "ct", "ct1"), headers={"Accept": accept})
    assert response.mimetype == "image/gif"


def test_a_frame_of_a_multi_frame_instance(reader: FlaskClient, study: dict) -> None:
    for frame, expected in ((1, 62), (2, 187)):  # 1000 and 3000 through the 0..4095 window
        response = reader.get(url(study, "mf", "mf1", f"frames/{frame}/rendered?accept=image/png"))
        assert response.status_code == 200
        assert (np.abs(image(response.data, "PNG") - expected) <= 1).all()


def test_several_frames_answer_a_multipart(reader: FlaskClient, study: dict) -> None:
    response = reader.get(url(study, "mf", "mf1", "frames/2,1/rendered"),
                          headers={"Accept": 'multipart/related; type="image/png"'})  # fmt: skip
    assert response.status_code == 200
    assert response.mimetype == "multipart/related"
    found = parts(response.content_type, response.data)
    assert [kind for kind, _ in found] == ["image/png", "image/png"]
    assert [image(data, "PNG")[0, 0] for _, data in found] == [187, 62]


def test_a_series_and_a_study_answer_one_image_per_instance(
    reader: FlaskClient, study: dict
) -> None:
    series = reader.get(url(study, "ct") + "?viewport=32,32")
    assert series.status_code == 200 and 'type="image/jpeg"' in series.content_type
    images = [image(data) for _, data in parts(series.content_type, series.data)]
    assert [pixels.shape for pixels in images] == [(16, 32)] * 3
    assert [round(pixels.mean() / 64) for pixels in images] == [0, 2, 4]  # instance order
    whole = reader.get(url(study), headers={"Accept": "image/png"})
    assert len(parts(whole.content_type, whole.data)) == 4  # then the second series


def test_thumbnails_are_small_single_images(reader: FlaskClient, study: dict) -> None:
    of_study = reader.get(url(study, tail="thumbnail"))
    assert of_study.mimetype == "image/jpeg"
    pixels = image(of_study.data)
    assert pixels.shape == (THUMBNAIL_SIZE // 2, THUMBNAIL_SIZE)  # 32 x 64 fitted into 128
    assert abs(pixels.mean() - 128) < 2  # the middle instance of the first series
    of_series = reader.get(url(study, "mf", tail="thumbnail") + "?viewport=20,20",
                           headers={"Accept": "image/png"})  # fmt: skip
    assert image(of_series.data, "PNG").shape == (20, 20)
    of_frame = reader.get(url(study, "mf", "mf1", "frames/2/thumbnail?accept=image/png"))
    assert image(of_frame.data, "PNG")[0, 0] == 187
    of_instance = reader.get(url(study, "ct", "ct3", "thumbnail"))
    assert image(of_instance.data).mean() > 250


# --- Errors -----------------------------------------------------------------------------


def reason(response) -> str:  # noqa: ANN001
    body = json.loads(response.data)
    assert body["status"] == response.status_code
    return body["error"]


def test_an_unsupported_media_type_is_406(reader: FlaskClient, study: dict) -> None:
    response = reader.get(url(study, "ct", "ct1"), headers={"Accept": "application/dicom"})
    assert response.status_code == 406
    assert "image/jpeg" in reason(response)
    response = reader.get(url(study, "ct", tail="thumbnail"), headers={"Accept": "video/mp4"})
    assert response.status_code == 406


@pytest.mark.parametrize(
    ("query", "expected"),
    [("?quality=0", "quality"), ("?window=40", "center,width"),
     ("?viewport=0,10", "vw"), ("?window=1,2,cubic", "function")],
)  # fmt: skip
def test_bad_parameters_are_400_with_a_reason(
    reader: FlaskClient, study: dict, query: str, expected: str
) -> None:
    response = reader.get(url(study, "ct", "ct1") + query)
    assert response.status_code == 400
    assert expected in reason(response)


def test_unknown_uids_and_frames_are_404(reader: FlaskClient, study: dict) -> None:
    unknown = {**study, "x": new_uid()}
    for path in (url({**study, "study": new_uid()}), url(unknown, "x"),
                 url(unknown, "ct", "x"), url(unknown, "mf", "ct1", "thumbnail"),
                 url(study, "ct", "ct1", "frames/2/rendered")):  # fmt: skip
        response = reader.get(path)
        assert response.status_code == 404, path
        assert reason(response)
    bad_frames = reader.get(url(study, "mf", "mf1", "frames/one/rendered"))
    assert bad_frames.status_code == 400 and "frame" in reason(bad_frames)
    not_a_uid = reader.get(url({**study, "x": "1.2.abc"}, "x", tail="thumbnail"))
    assert not_a_uid.status_code == 400 and "not a valid UID" in reason(not_a_uid)


def store_without_pixels(app: Flask, **fields: object) -> dict[str, str]:
    """A stored instance without pixels (as an SR or a KO is), in series number 1."""
    ds = make_dataset(SeriesNumber=1, **fields)  # type: ignore[arg-type]
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    root = storage.archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        storage.store_instance(db, root, received(ds), zone=site_of(app).zone)
    return {"study": ds.StudyInstanceUID, "s": ds.SeriesInstanceUID, "i": ds.SOPInstanceUID}


def test_an_instance_without_pixels_is_406(app: Flask, reader: FlaskClient) -> None:
    uids = store_without_pixels(app)
    response = reader.get(url(uids, "s", "i"))
    assert response.status_code == 406 and "no image pixel data" in reason(response)
    assert reader.get(url(uids)).status_code == 406
    assert reader.get(url(uids, tail="thumbnail")).status_code == 406


def test_a_study_thumbnail_passes_over_a_series_without_pixels(
    app: Flask, reader: FlaskClient
) -> None:
    uids = store_without_pixels(app)
    store(app, np.full((8, 8), 4095), study=uids["study"], SeriesNumber=2)
    response = reader.get(url(uids, tail="thumbnail"), headers={"Accept": "image/png"})
    assert response.status_code == 200
    assert (image(response.data, "PNG") == 255).all()


# --- Access and audit ---------------------------------------------------------------------


def test_roles_and_sign_in_are_required(app: Flask, make_user, study: dict) -> None:  # noqa: ANN001
    anonymous = app.test_client()
    assert anonymous.get(url(study, "ct", "ct1")).status_code == 401
    billing = app.test_client()
    sign_in(billing, make_user("billing"))
    assert billing.get(url(study, "ct", "ct1")).status_code == 403
    assert billing.get(url(study, tail="thumbnail")).status_code == 403


def test_every_request_is_audited_once(app: Flask, reader: FlaskClient, study: dict) -> None:
    reader.get(url(study, "ct", "ct1"))
    reader.get(url(study, tail="thumbnail"))
    reader.get(url(study, "mf")).get_data()
    with transaction(app) as db:
        events = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "dicomweb.retrieve")
            .order_by(AuditEvent.id)
        ).all()  # fmt: skip
        seen = [(e.action, e.object_id, json.loads(e.detail or "{}")) for e in events]
    assert [(object_id, detail["what"]) for _, object_id, detail in seen] == [
        (study["study"], "rendered"), (study["study"], "thumbnail"), (study["study"], "rendered"),
    ]  # fmt: skip
    assert seen[0][2] == {"what": "rendered", "path": url(study, "ct", "ct1"),
                          "series": study["ct"], "instances": 1}  # fmt: skip
    assert seen[1][2]["instances"] == 1  # the one instance the thumbnail shows
    assert seen[2][2]["series"] == study["mf"] and seen[2][2]["instances"] == 1


# --- A real client against the web door -----------------------------------------------------


@pytest.fixture
def placa(tmp_path: Path, database_url: str) -> Iterator[Placa]:
    yield from start(tmp_path, database_url)


def test_dicomweb_client_retrieves_rendered_images(placa: Placa) -> None:
    uids = {"study": new_uid(), "ct": new_uid()}
    for number, value in enumerate((1000, 3000), start=1):
        uids[f"ct{number}"] = store(placa.app, np.full((32, 32), value), study=uids["study"],
                                    series=uids["ct"], number=number)  # fmt: skip
    client = placa.client("radiologist")  # a bearer API token
    png = client.retrieve_instance_rendered(uids["study"], uids["ct"], uids["ct2"],
                                            media_types=("image/png",),
                                            params={"viewport": "16,16"})  # fmt: skip
    assert image(png, "PNG").shape == (16, 16) and image(png, "PNG")[0, 0] == 187
    frame = client.retrieve_instance_frames_rendered(uids["study"], uids["ct"], uids["ct1"],
                                                     [1], media_types=("image/jpeg",))  # fmt: skip
    assert abs(image(frame).mean() - 62) < 2
    series = client.retrieve_series_rendered(uids["study"], uids["ct"],
                                             media_types=("image/jpeg",))  # fmt: skip
    assert series.startswith(b"--")  # the multipart body as sent
    by_basic = placa.session("technologist").get(  # HTTP Basic
        f"{placa.base}/studies/{uids['study']}/series/{uids['ct']}/rendered",
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert by_basic.status_code == 200
    assert len(parts(by_basic.headers["Content-Type"], by_basic.content)) == 2


def test_a_series_rendering_leaves_out_what_has_no_pixels(app: Flask, reader: FlaskClient) -> None:
    uids = store_without_pixels(app, number=1)
    store(app, np.full((8, 8), 0), study=uids["study"], series=uids["s"], number=2)
    response = reader.get(url(uids, "s"), headers={"Accept": "image/png"})
    assert response.status_code == 200
    found = parts(response.content_type, response.data)
    assert len(found) == 1 and (image(found[0][1], "PNG") == 0).all()


def test_a_missing_file_is_404_alone_and_left_out_of_a_series(
    app: Flask, reader: FlaskClient, study: dict
) -> None:
    root = storage.archive_root(app.config["DATA_DIR"])
    with transaction(app) as db:
        found = storage.find_instance(db, study["ct1"])
    assert found is not None
    (root / found[1]).unlink()
    alone = reader.get(url(study, "ct", "ct1"))
    assert alone.status_code == 404 and "missing" in reason(alone)
    series = reader.get(url(study, "ct"))
    assert series.status_code == 200
    assert len(parts(series.content_type, series.data)) == 2
