"""Reports: the reading queue, report authoring, PDF output and results out."""
