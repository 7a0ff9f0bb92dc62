-- Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d).
-- The Airflow metadata database is created by the image from POSTGRES_DB; the GPU quota ledger
-- and the Feast SQL registry get databases of their own, owned by the same role.
CREATE DATABASE nuro_ledger OWNER airflow;
CREATE DATABASE feast_registry OWNER airflow;
