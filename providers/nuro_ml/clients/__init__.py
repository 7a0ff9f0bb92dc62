"""Engine clients with no Airflow: the Ray dashboard and Jobs API, Kubernetes, AWS.

Like Ray's own ``JobSubmissionClient``, each client takes an address and credentials and is
usable anywhere (a Spark or Ray worker, the simulator, a script). Answers are typed; failures
are provider exceptions that carry the HTTP status (``status_code``), so callers decide on
codes rather than on message text. The hooks in :mod:`nuro_ml.hooks` wrap these clients with
Airflow connections and secrets masking. Slurm's client is the :mod:`nuro_ml.slurm` package.
"""
