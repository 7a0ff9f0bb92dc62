"""nuro-ml-platform: Airflow provider for autonomous-vehicle ML pipelines."""
