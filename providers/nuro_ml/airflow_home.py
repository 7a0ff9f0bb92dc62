"""The Airflow home used for local work: ``.airflow/`` in the checkout, kept out of git.

It points Airflow at this repository's ``dags/`` and ``plugins/``, uses a SQLite metadata
database, and loads no example DAGs, so ``airflow`` commands run against the project as is.
"""

from __future__ import annotations

import os
from pathlib import Path

from nuro_ml.settings import REPO_ROOT

CONFIG_TEMPLATE = """\
# Written by `nuro-ml airflow-home`; local development settings for this checkout.
[core]
dags_folder = {dags}
plugins_folder = {plugins}
load_examples = False
executor = LocalExecutor
parallelism = 4
dags_are_paused_at_creation = False
dagbag_import_timeout = 30

[database]
sql_alchemy_conn = sqlite:///{home}/airflow.db

[logging]
base_log_folder = {home}/logs

[api]
port = 8080

[operators]
default_deferrable = True
"""


def airflow_home() -> Path:
    """``$AIRFLOW_HOME`` when set, else ``.airflow/`` in the checkout."""
    return Path(os.environ.get("AIRFLOW_HOME", REPO_ROOT / ".airflow")).resolve()


def ensure_airflow_home(home: Path | None = None) -> Path:
    """Create the Airflow home and its ``airflow.cfg`` if missing; return the home path.

    An existing ``airflow.cfg`` is left alone: users may have tuned it.
    """
    home = (home or airflow_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "airflow.cfg"
    if not cfg.exists():
        tmp = cfg.with_suffix(".cfg.tmp")
        tmp.write_text(
            CONFIG_TEMPLATE.format(dags=REPO_ROOT / "dags", plugins=REPO_ROOT / "plugins", home=home)
        )
        tmp.replace(cfg)
    return home


def airflow_env(home: Path | None = None) -> dict[str, str]:
    """Environment for ``airflow`` sub-processes run against the local home."""
    home = ensure_airflow_home(home)
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(home)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env
