"""Sphinx configuration of the nuro-ml provider documentation (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "nuro-ml-platform"
author = "nuro-ml-platform contributors"
copyright = "2026, nuro-ml-platform contributors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "nuro_docs",
]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = "nuro-ml provider"

# Every reference of ours must resolve. Other projects' objects (Airflow, pydantic, Ray, the
# standard library) are not resolvable offline: no intersphinx inventory can be fetched here, so
# their pages are plain links and their names are not checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!nuro_ml\.).*"),
    # Private bases and mixins are not part of the API, so they have no page to point at.
    (r"py:.*", r"nuro_ml\..*\._[A-Za-z].*"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "exclude-members": "__init__"}
