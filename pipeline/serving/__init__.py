"""Serving a materialized ensemble over HTTP: versioned artifacts, storage, the FastAPI app (issue #13)."""
