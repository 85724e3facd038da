"""PACS: the archive, DICOM storage and query/retrieve, DICOMweb and the viewer."""
