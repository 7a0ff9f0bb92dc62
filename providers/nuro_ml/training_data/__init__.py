"""Training data as a platform feature: dataset specs, content-keyed shards, a cached shard loader.

``spec``, ``windows``, ``loader`` and ``scoring`` (the metrics every training workload reports)
import only numpy and pyarrow, so the training step, the loader and the scoring also run where
neither Airflow nor Ray is installed (a bare GPU box with PyTorch).
``staging`` (boto3) writes the shards to object storage; ``synthetic`` writes ETL-layout tables
for drives simulated with the fleet generator's kinematics.
"""
