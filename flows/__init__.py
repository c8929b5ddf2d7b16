"""Prefect flows that orchestrate normpipe's Dask jobs (no numerical code lives here)."""
