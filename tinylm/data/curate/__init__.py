"""Data curation: ingest with provenance, filter, dedup and clone detection, decontamination,
ranking, the audit report, and the two-person publish gate (`tinylm data ...`). The dataset
folder every step reads and writes is `dataset.py`."""
