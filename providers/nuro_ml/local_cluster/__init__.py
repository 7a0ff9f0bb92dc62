"""The distributed topology as processes on one machine, on loopback.

PostgreSQL and Redis from the Debian packages, a Spark standalone master and worker, a Ray
head and worker node, and the Airflow scheduler, dag-processor, triggerer and api-server
(LocalExecutor on PostgreSQL), wired together the way ``docker/docker-compose.yaml`` wires the
containers: the same connections (``spark_default``, ``ray_default``, ``feast_default``), the
same ``NURO_ML_*`` environment, the ledger and the Feast registry on PostgreSQL and the Redis
online store.

``python -m nuro_ml.local_cluster up|down|status`` (``make cluster-up`` / ``make cluster-down``)
records what it started in ``.cluster/state.json``, so ``down`` stops exactly those processes,
by process group, and ``up`` on a running cluster changes nothing. The per-service modules
(:mod:`.processes`, :mod:`.postgres`, :mod:`.redis`, :mod:`.spark`, :mod:`.ray_nodes`,
:mod:`.airflow`) are what the test fixtures start their services with, too.
"""
