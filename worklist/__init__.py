"""Worklist: what modalities pull (Modality Worklist) and report (MPPS)."""
