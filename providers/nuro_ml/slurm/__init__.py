"""Slurm support for the hooks: job and node vocabulary, command output parsing, the two ways to
reach a cluster (the Slurm commands and slurmrestd) and the connection settings.

Modules, each with one job:

* :mod:`~nuro_ml.slurm.state`: job states and which node states take work;
* :mod:`~nuro_ml.slurm.models`: the job, job spec and node records the hooks return;
* :mod:`~nuro_ml.slurm.submit`: batch script text, ``--time`` text and the job environment;
* :mod:`~nuro_ml.slurm.parsing`: output of ``scontrol``, ``sacct``, ``sbatch``, ``squeue``, ``sinfo``;
* :mod:`~nuro_ml.slurm.cli`: command lines and running them (blocking and asyncio);
* :mod:`~nuro_ml.slurm.rest`: slurmrestd request bodies and replies;
* :mod:`~nuro_ml.slurm.rest_client`: the slurmrestd HTTP client;
* :mod:`~nuro_ml.slurm.output`: where a job writes its output and reading its tail;
* :mod:`~nuro_ml.slurm.connection`: merging hook arguments with the ``slurm`` connection;
* :mod:`~nuro_ml.slurm.errors`: telling "unknown job" apart from other failures.

The hooks in :mod:`nuro_ml.hooks.slurm` combine these and re-export the public names.
"""
