"""The technologist's unmatched studies: images the archive received that no exam claims
(no pre-assigned Study Instance UID, no known accession number). The technologist opens
one, sees what the images say, and links it to the right exam."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response

from pacs import reconciliation, unmatched
from pacs.models import Study
from ris import audit, scheduling
from ris.auth import TECHNOLOGISTS, current_actor, roles
from ris.db import get_db, get_or_404
from ris.frontdesk.common import (
    Words,
    alert_badges,
    link_chosen_exam,
    local_today,
    person_name,
)
from ris.frontdesk_forms import ChooseExamForm
from ris.site import site_of
from ris.views import NAV, NavItem

QUERY_MAX = 100

bp = Blueprint("archive", __name__, url_prefix="/archive")


def _add_navigation() -> None:
    """Next to the unscheduled exams (the other half of reconciliation): right after them
    when worklist's entries are in, else after the day board, where worklist inserts its
    own entries before this one."""
    endpoints = [item.endpoint for item in NAV]
    anchor = next((e for e in ("worklist.unscheduled", "frontdesk.board") if e in endpoints), None)
    after = endpoints.index(anchor) + 1 if anchor else len(NAV)
    entry = NavItem("archive.unmatched", _l("Unmatched studies"), frozenset(TECHNOLOGISTS))
    NAV.insert(after, entry)


_add_navigation()  # once: Python imports a module once per process


@bp.context_processor
def _template_helpers() -> dict[str, object]:
    zone, words = site_of(current_app).zone, Words.of_request()

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "—"

    return {
        "status_labels": words.status, "sex_labels": words.sex,
        "badges": partial(alert_badges, words=words), "person": person_name, "local": local,
        "current_step": scheduling.current_step, "modalities": unmatched.modalities_of,
    }  # fmt: skip


@bp.route("/unmatched", endpoint="unmatched")
@roles(*TECHNOLOGISTS)
def unmatched_list() -> str:
    """The studies no exam claims, newest first, as the images named them."""
    db = get_db()
    studies = reconciliation.unmatched_studies(db)
    senders = unmatched.calling_aes(db, [study.id for study in studies])
    audit.record(db, current_actor(), "archive.unmatched.view", object_type="study",
                 detail={"studies": len(studies)})  # fmt: skip
    db.commit()
    return render_template("pacs/unmatched.html", studies=studies, senders=senders)


@bp.route("/unmatched/<int:study_id>", endpoint="study")
@roles(*TECHNOLOGISTS)
def study_page(study_id: int) -> str | Response:
    """One unmatched study as received, and the exams it may belong to."""
    db, site = get_db(), site_of(current_app)
    study = get_or_404(Study, study_id)
    if study.procedure_id is not None:
        flash(_("This study is already linked to an exam."), "info")
        return redirect(url_for(".unmatched"))
    query = request.args.get("q", "").strip()[:QUERY_MAX]
    found = unmatched.study_candidates(db, site, local_today(site), study, query)
    shown = {exam.id for exam in [*found.exams, *found.room_exams]}
    audit.record(db, current_actor(), "archive.unmatched.study.view", object_type="study",
                 object_id=study.study_instance_uid,
                 detail={"query": query, "patients": len(found.patients),
                         "exams": sorted(shown)})  # fmt: skip
    db.commit()
    return render_template(
        "pacs/unmatched_study.html", study=study, query=query, found=found,
        series=unmatched.series_of(db, study),
        senders=unmatched.calling_aes(db, [study.id])[study.id], form=ChooseExamForm(),
    )  # fmt: skip


@bp.route("/unmatched/<int:study_id>/link", methods=["POST"], endpoint="link")
@roles(*TECHNOLOGISTS)
def link(study_id: int) -> Response:
    """Link the study to the exam the technologist chose."""
    study = get_or_404(Study, study_id)
    exam = link_chosen_exam(
        ChooseExamForm(),
        lambda exam: reconciliation.link_study(get_db(), current_actor(), study, exam),
        f"study {study.study_instance_uid}",
    )
    if exam is None:
        return redirect(url_for(".study", study_id=study_id))
    flash(_("The study is linked to exam %(accession)s.", accession=exam.accession_number),
          "info")  # fmt: skip
    return redirect(url_for(".unmatched"))
