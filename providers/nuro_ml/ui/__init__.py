"""Airflow UI extension: the GPU capacity page and its JSON API (a FastAPI app)."""
