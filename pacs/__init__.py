"""PACS: the archive, DICOM storage and query/retrieve, DICOMweb and the viewer."""

# The RIS's patient merge moves the archive's studies too: reconciliation registers the hook.
from pacs import reconciliation as _reconciliation  # noqa: E402, F401
