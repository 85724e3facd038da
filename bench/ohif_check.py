#!/usr/bin/env python3
"""README's OHIF configuration against a running Placa, in a real OHIF viewer (issue 7).

By hand, never in pytest. What it does, inside a private network namespace (loopback only,
so its ports cannot clash with another bench's):

1. starts a fresh Placa (``vs_orthanc.start_placa``: SQLite, a temporary data folder) with
   ``PLACA_CORS_ORIGINS`` set to the viewer's origin, creates a ``radiologist`` and an API
   token for it (``flask --app wsgi users create``, ``users token create``);
2. stores one CT study by DCMTK ``storescu -aec PLACA``: a phantom of ``--slices`` images
   generated here with pydicom, or the files of ``--corpus`` (``make_corpus.py``, one study);
3. serves a prebuilt OHIF v3 (the npm package ``@ohif/app``: its ``dist/`` folder is the
   built viewer) twice, each with ``/app-config.js`` replaced by the ``window.config`` block
   of README.md's OHIF section: on one origin with ``https://placa.example.org`` replaced by
   Placa (the viewer calls Placa across origins, CORS), and on another with it replaced by
   that origin itself, whose ``/dicomweb`` goes to Placa with the token added (a stand-in
   for the README's reverse proxy);
4. drives them in headless Chromium (Debian's ``/usr/bin/chromium``, through playwright):
   across origins, the study list opened directly is answered 401 (OHIF holds no
   credential there), the viewer URL with ``&token=`` draws the series (a canvas with
   non-blank pixels, a different image ten wheel steps on) and the study list reached from
   it shows the patient, date and accession; behind the proxy, the study list opened
   directly shows the study and the viewer draws it. Screenshots go to ``--out``; every
   DICOMweb request (with its Accept and answer type), every refused or failed request (URL,
   status, headers, body excerpt) and the console's errors and warnings are reported.

Prints one JSON summary (``ok`` true when every expected check holds) and exits 1 otherwise.

  mkdir -p /tmp/ohif && cd /tmp/ohif && npm pack @ohif/app@3.13.2 && tar xzf ohif-app-3.13.2.tgz
  /tmp/bench-venv/bin/pip install playwright    # never `playwright install`: Debian's chromium
  /tmp/bench-venv/bin/python bench/ohif_check.py --ohif /tmp/ohif/package/dist
  /tmp/bench-venv/bin/python bench/ohif_check.py --ohif /tmp/ohif/package/dist \\
      --corpus /tmp/corpus-series500 --out /tmp/ohif/corpus
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_orthanc  # noqa: E402
from vs_orthanc import PORTS, in_private_network, placa_env, running, start_placa  # noqa: E402

README = vs_orthanc.ROOT / "README.md"
README_PLACA = "https://placa.example.org"
VIEWER_PORT = 24380  # the viewer calling Placa across origins (CORS)
PROXY_PORT = 24381  # the viewer and its DICOMweb behind one (stand-in) reverse proxy
PATIENT_NAME, PATIENT_ID, STUDY_DATE = "OHIF^Check", "OHIF-0001", "20260115"
PASSWORD = "ohif check password 123\n"
# The viewer's back arrow to the study list: the app's own navigation, no page load.
RETURN_TO_LIST = '[data-cy="return-to-work-list"]'


# ------------------------------------------------------------------------- the study


def phantom(rows: int, slice_no: int) -> np.ndarray:
    """Air around a water disc holding two bone rods and a slice-dependent fat spot (HU)."""
    y, x = np.mgrid[0:rows, 0:rows] - rows / 2
    image = np.full((rows, rows), -1000, dtype=np.int16)
    image[x**2 + y**2 < (rows * 0.4) ** 2] = 0
    image[(x - rows * 0.15) ** 2 + y**2 < (rows * 0.05) ** 2] = 700
    image[(x + rows * 0.15) ** 2 + y**2 < (rows * 0.05) ** 2] = 700
    image[x**2 + (y - rows * 0.2) ** 2 < (rows * (0.03 + 0.01 * slice_no)) ** 2] = -100
    return image


@dataclass(frozen=True)
class Study:
    """The stored study, and what OHIF should show of it."""

    uid: str
    paths: list[Path]
    family_name: str
    accession: str
    date: str  # YYYYMMDD
    descriptions: list[str]  # study and series, in the viewer's study panel

    @classmethod
    def of(cls, paths: list[Path]) -> Study:
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        texts = [str(ds.get(key) or "") for key in ("StudyDescription", "SeriesDescription")]
        return cls(ds.StudyInstanceUID, paths, ds.PatientName.family_name, ds.AccessionNumber,
                   ds.StudyDate, [text for text in texts if text])  # fmt: skip


def corpus_study(corpus: Path) -> list[Path]:
    """The files of a ``make_corpus.py`` corpus holding one study (``/tmp/corpus-series500``)."""
    paths = sorted(corpus.rglob("*.dcm"))
    if not paths:
        raise SystemExit(f"{corpus}: no DICOM files (*.dcm)")
    return paths


def write_study(folder: Path, slices: int, rows: int = 256) -> list[Path]:
    """A CT series of ``slices`` images, Explicit VR Little Endian."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for number in range(1, slices + 1):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.PatientName, ds.PatientID, ds.PatientSex = PATIENT_NAME, PATIENT_ID, "O"
        ds.PatientBirthDate = "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber, ds.StudyID, ds.StudyDescription = "OHIF1", "1", "OHIF check phantom"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, number
        ds.SeriesDescription, ds.ImageType = "Phantom axial", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-rows / 2, -rows / 2, float(number * 5)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 5
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = phantom(rows, number).tobytes()
        path = folder / f"ct{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def store(paths: list[Path]) -> None:
    command = ["storescu", "-aec", "PLACA", "127.0.0.1", str(PORTS["placa_dicom"])]
    subprocess.run([*command, *map(str, paths)], check=True, capture_output=True, timeout=900)


# ------------------------------------------------------------------------- Placa


def placa_token(server: vs_orthanc.Server) -> str:
    """A read-only (radiologist) account's API token, as the README advises for OHIF."""
    env = placa_env(server.folder, f"sqlite:///{server.folder / 'placa.db'}")
    flask = [str(vs_orthanc.ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi"]

    def run(*words: str, stdin: str | None = None) -> str:
        done = subprocess.run([*flask, *words], cwd=vs_orthanc.ROOT, env=env, input=stdin,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    run("users", "create", "ohif", "--role", "radiologist", "--password-stdin", stdin=PASSWORD)
    return run("users", "token", "create", "ohif", "--label", "OHIF").strip().splitlines()[-1]


# ------------------------------------------------------------------------- the viewer


def readme_config(placa_url: str) -> str:
    """The ``window.config`` block of README.md's OHIF section, pointed at this Placa."""
    section = README.read_text().split("### OHIF", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```js\n(.*?)```", section, re.DOTALL)
    (config,) = [block for block in blocks if "window.config" in block]
    if README_PLACA not in config:
        raise SystemExit(f"README's OHIF config does not mention {README_PLACA}")
    return config.replace(README_PLACA, placa_url)


class ViewerHandler(SimpleHTTPRequestHandler):
    """OHIF's dist folder as a single-page app, with the README's ``app-config.js``.

    With ``placa`` and ``token`` set it also stands in for the README's reverse proxy:
    ``/dicomweb/...`` goes to Placa with ``Authorization: Bearer`` added, so the viewer and
    its DICOMweb share one origin and no CORS is involved.
    """

    config = b""
    placa = ""
    token = ""
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm"}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.answer(200, "application/javascript", self.config)
            return
        if self.placa and path.startswith("/dicomweb"):
            self.forward()
            return
        if not Path(self.translate_path(path)).is_file():
            self.path = "/index.html"  # the viewer's own routes (/viewer, /?...)
        super().do_GET()

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if "Accept" in self.headers:
            headers["Accept"] = self.headers["Accept"]
        request = urllib.request.Request(self.placa + self.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as upstream:
                self.answer(upstream.status, upstream.headers["Content-Type"], upstream.read())
        except urllib.error.HTTPError as refused:
            self.answer(refused.code, refused.headers["Content-Type"] or "text/plain",
                        refused.read())  # fmt: skip

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # the browser's side is what is reported


def serve_viewer(dist: Path, port: int, config: str, placa: str = "",
                 token: str = "") -> ThreadingHTTPServer:  # fmt: skip
    handler_class = type("Viewer", (ViewerHandler,),
                         {"config": config.encode(), "placa": placa, "token": token})  # fmt: skip
    handler = functools.partial(handler_class, directory=str(dist))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ------------------------------------------------------------------------- the browser


class Recorder:
    """Console errors and failed or refused requests of one page."""

    def __init__(self, page: object, placa_url: str) -> None:
        self.placa_url = placa_url  # the origin whose /dicomweb answers this page
        self.console: list[str] = []
        self.failed: list[dict] = []
        self.placa_requests: dict[str, dict] = {}  # UIDs as {uid}: count, one exchange's types
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _console(self, message: object) -> None:
        if message.type in ("error", "warning") and len(self.console) < 200:
            self.console.append(f"{message.type}: {message.text[:500]}")

    def _request_failed(self, request: object) -> None:
        self.failed.append({"url": request.url, "method": request.method,
                            "failure": request.failure})  # fmt: skip

    def _response(self, response: object) -> None:
        if response.url.startswith(f"{self.placa_url}/dicomweb"):
            path = re.sub(r"[0-9.]{20,}", "{uid}", response.url[len(self.placa_url) :])
            seen = self.placa_requests.setdefault(
                f"{response.request.method} {response.status} {path[:200]}",
                {"count": 0, "accept": response.request.headers.get("accept"),
                 "content_type": response.headers.get("content-type")})  # fmt: skip
            seen["count"] += 1
        if response.status < 400:
            return
        try:
            body = response.text()[:300]
        except Exception as exc:  # noqa: BLE001 (a body the browser no longer holds)
            body = f"(no body: {exc})"
        self.failed.append({"url": response.url, "method": response.request.method,
                            "status": response.status, "headers": response.headers,
                            "request_headers": response.request.headers, "body": body})  # fmt: skip


def drawn_pixels(page: object) -> dict:
    """Distinct grey levels, non-black share and mean grey of the largest viewport canvas."""
    return page.evaluate("""() => {
        const canvases = [...document.querySelectorAll('canvas')]
            .filter(c => c.width > 64 && c.height > 64);
        if (!canvases.length) return {canvases: 0};
        const c = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
        const ctx = c.getContext('2d');
        if (!ctx) return {canvases: canvases.length, error: 'not a 2d canvas'};
        const data = ctx.getImageData(0, 0, c.width, c.height).data;
        const levels = new Set(); let lit = 0; let sum = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
            levels.add(data[i]);
            sum += data[i];
        }
        const pixels = data.length / 4;
        return {canvases: canvases.length, width: c.width, height: c.height,
                lit_share: lit / pixels, levels: levels.size, mean: sum / pixels};
    }""")


def image_drawn(pixels: dict) -> bool:
    return pixels.get("lit_share", 0) > 0.05 and pixels.get("levels", 0) > 3


def wait_for_image(page: object, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    pixels: dict = {}
    while time.monotonic() < deadline:
        pixels = drawn_pixels(page)
        if image_drawn(pixels):
            return pixels
        page.wait_for_timeout(500)
    return pixels


def scroll_changes_image(page: object, shot: Path) -> bool:
    """Ten wheel steps: another slice, another mean grey (other frames load too)."""
    dismiss_overlays(page)
    before = drawn_pixels(page).get("mean")
    box = page.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(10):
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(200)
    page.wait_for_timeout(1500)
    after = drawn_pixels(page)
    page.screenshot(path=str(shot))
    return image_drawn(after) and after.get("mean") != before


def dismiss_overlays(page: object) -> None:
    """OHIF's first-visit tour and banner: over the image, they would catch the wheel."""
    for label in ("Skip all", "Confirm and hide"):
        button = page.get_by_text(label, exact=True)
        if button.count():
            button.first.click()
            page.wait_for_timeout(300)


def page_text_has(page: object, texts: list[str], seconds: float) -> dict[str, bool]:
    deadline = time.monotonic() + seconds
    found = {text: False for text in texts}
    while time.monotonic() < deadline and not all(found.values()):
        body = page.inner_text("body")
        found = {text: text in body for text in texts}
        page.wait_for_timeout(500)
    return found


def study_date_shown(page: object, study_date: str) -> bool:
    """OHIF shows dates in its own format (``15-Jan-2026``): any usual spelling."""
    day = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
    spellings = [study_date, day.isoformat(), day.strftime("%b %d, %Y"),
                 day.strftime("%d-%b-%Y"), day.strftime("%m/%d/%Y"),
                 day.strftime("%d/%m/%Y"), day.strftime("%Y-%b-%d")]  # fmt: skip
    body = page.inner_text("body")
    return any(s in body for s in spellings)


def browse(args: argparse.Namespace, origins: dict[str, str], study: Study, token: str) -> dict:
    from playwright.sync_api import sync_playwright

    viewer, proxy = origins["viewer"], origins["proxy"]
    listed = functools.partial(study_list, study=study)
    shown = functools.partial(viewer_shows, study=study)
    opened = f"viewer?StudyInstanceUIDs={study.uid}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])  # fmt: skip
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            return {
                "cors_study_list_without_token": visit(
                    args, context, origins["placa"], "cors-no-token",
                    [(f"{viewer}/", listed)]),
                "cors_viewer_with_token": visit(
                    args, context, origins["placa"], "cors-token",
                    [(f"{viewer}/{opened}&token={token}", shown), (RETURN_TO_LIST, listed)]),
                "proxy_study_list_then_viewer": visit(
                    args, context, proxy, "proxy",
                    [(f"{proxy}/", listed), (f"{proxy}/{opened}", shown)]),
            }  # fmt: skip
        finally:
            browser.close()


def visit(args: argparse.Namespace, context: object, dicomweb_origin: str, name: str,
          pages: list[tuple[str, object]]) -> dict:  # fmt: skip
    """One tab through ``pages`` (URL to open or element to click, check)."""
    page = context.new_page()
    recorder = Recorder(page, dicomweb_origin)
    result: dict = {}
    for number, (url, check) in enumerate(pages, 1):
        if url.startswith("["):  # clicked: the app keeps what it holds (the token)
            page.locator(url).first.click()
        else:
            page.goto(url, wait_until="load")
        seen = check(page, args, f"{name}-{number}")
        seen["token_left_in_url"] = "token=" in page.url
        result[f"{number}_{check.func.__name__}"] = seen
    page.close()
    base = f"{dicomweb_origin}/dicomweb"
    dicomweb = [f for f in recorder.failed if f["url"].startswith(base)]
    # Leaving the viewer (or its cache purging) cancels its prefetch: the page's own doing.
    aborted = [f for f in dicomweb if f.get("failure") == "net::ERR_ABORTED"]
    refused = [f for f in dicomweb if f not in aborted]  # 4xx/5xx, CORS (net::ERR_FAILED)...
    refusals = sorted({str(f.get("status") or f.get("failure")) for f in refused})
    return {**result, "dicomweb_requests": recorder.placa_requests, "dicomweb_refusals": refusals,
            "dicomweb_refused": refused[:5], "dicomweb_aborted_by_page": len(aborted),
            "other_failures": [f for f in recorder.failed if f not in dicomweb][:10],
            "console": recorder.console[:60]}  # fmt: skip


def study_list(page: object, args: argparse.Namespace, shot: str, study: Study) -> dict:
    """The study list: the stored study's patient, accession and date in a row."""
    names = page_text_has(page, [study.family_name, study.accession], 20)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(args.out / f"{shot}-study-list.png"))
    return {"patient_shown": names[study.family_name],
            "accession_shown": names[study.accession],
            "date_shown": study_date_shown(page, study.date)}  # fmt: skip


def viewer_shows(page: object, args: argparse.Namespace, shot: str, study: Study) -> dict:
    """The viewer: the series drawn (non-blank canvas), the wheel reaching another slice."""
    pixels = wait_for_image(page, args.wait)
    page.wait_for_timeout(2000)  # thumbnails and overlays settle
    page.screenshot(path=str(args.out / f"{shot}-viewer.png"))
    texts = page_text_has(page, study.descriptions, 5)
    drawn = image_drawn(pixels)
    other_slice = drawn and scroll_changes_image(page, args.out / f"{shot}-viewer-scrolled.png")
    return {"pixels": pixels, "image_drawn": drawn, "series_shown": all(texts.values()),
            "scroll_changes_image": other_slice}  # fmt: skip


# ------------------------------------------------------------------------- main


def verdict(report: dict) -> dict[str, bool]:
    """Each expectation of the README's OHIF section, held or not."""
    alone = report["cors_study_list_without_token"]
    token = report["cors_viewer_with_token"]
    proxy = report["proxy_study_list_then_viewer"]

    def listed(seen: dict) -> bool:
        return seen["patient_shown"] and seen["accession_shown"] and seen["date_shown"]

    def quiet(visits: dict) -> bool:
        return not any(line.startswith(("error", "pageerror")) for line in visits["console"])

    def shown(seen: dict) -> bool:
        return seen["image_drawn"] and seen["series_shown"] and seen["scroll_changes_image"]

    return {
        "cors_without_token_is_401": alone["dicomweb_refusals"] == ["401"],
        "cors_token_viewer_draws": shown(token["1_viewer_shows"])
        and not token["1_viewer_shows"]["token_left_in_url"],
        "cors_token_then_study_list": listed(token["2_study_list"]),
        "cors_token_no_refusal": not token["dicomweb_refusals"] and quiet(token),
        "proxy_study_list": listed(proxy["1_study_list"]),
        "proxy_viewer_draws": shown(proxy["2_viewer_shows"]),
        "proxy_no_refusal": not proxy["dicomweb_refusals"] and quiet(proxy),
    }


def check(args: argparse.Namespace) -> dict:
    origins = {"placa": f"http://127.0.0.1:{PORTS['placa_http']}",
               "viewer": f"http://127.0.0.1:{VIEWER_PORT}",
               "proxy": f"http://127.0.0.1:{PROXY_PORT}"}  # fmt: skip
    os.environ["PLACA_CORS_ORIGINS"] = origins["viewer"]  # read by start_placa's environment
    work = Path(tempfile.mkdtemp(prefix="ohif-check-"))
    servers: list[ThreadingHTTPServer] = []
    try:
        with running(start_placa(work, None, "placa-sqlite")) as placa:
            token = placa_token(placa)
            paths = corpus_study(args.corpus) if args.corpus else write_study(work, args.slices)
            study = Study.of(paths)
            store(paths)
            servers.append(serve_viewer(args.ohif, VIEWER_PORT, readme_config(origins["placa"])))
            servers.append(serve_viewer(args.ohif, PROXY_PORT, readme_config(origins["proxy"]),
                                        placa=origins["placa"], token=token))  # fmt: skip
            report = browse(args, origins, study, token)
    finally:
        for server in servers:
            server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return {**origins, "study": study.uid, "instances": len(paths), **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ohif", type=Path, required=True, help="@ohif/app's dist/ folder")
    parser.add_argument("--slices", type=int, default=5, help="CT images generated")
    parser.add_argument("--corpus", type=Path, help="store this one-study corpus instead")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ohif"), help="screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--wait", type=float, default=60, help="seconds for the first image")
    args = parser.parse_args()
    if not (args.ohif / "index.html").is_file():
        raise SystemExit(f"{args.ohif} holds no index.html: not a built OHIF dist/ folder")
    in_private_network()
    args.out.mkdir(parents=True, exist_ok=True)
    package = json.loads((args.ohif.parent / "package.json").read_text())
    started = time.monotonic()
    report = {"ohif": f"{package['name']}@{package['version']}", **check(args)}  # fmt: skip
    checks = verdict(report)
    report.update(checks=checks, ok=all(checks.values()),
                  wall_s=round(time.monotonic() - started, 1), loadavg=os.getloadavg())  # fmt: skip
    print(json.dumps(report, indent=1))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
