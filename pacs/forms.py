"""Forms of the archive's screens."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import IntegerField
from wtforms.validators import DataRequired


class LinkStudyForm(FlaskForm):
    """The exam an unmatched study belongs to."""

    exam_id = IntegerField(_l("Exam"), validators=[DataRequired(message=_l("Choose an exam."))])
