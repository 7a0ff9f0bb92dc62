"""Streaming sources of the telemetry stream job (PySpark Python ``DataSourceStreamReader``\\s).

Each source turns an append-only log into offsets Spark checkpoints: a Redis Stream
(:mod:`.redis_stream`, entry ids) and a landing area of MCAP segments (:mod:`.mcap_landing`,
positions in a durable manifest). A Kafka source fits the same shape on a deployment that runs
Kafka: its rows carry the same envelope (``id``, ``added_at``, ``fields``).
"""
