"""Trace-driven simulation of the admission policy (``nuro-ml sim``)."""
