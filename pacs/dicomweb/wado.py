"""WADO-RS (PS3.18 10.4): study, series and instance retrieval, metadata, frames, bulk data."""

from __future__ import annotations
