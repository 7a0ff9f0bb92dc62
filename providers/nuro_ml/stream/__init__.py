"""The telemetry stream as an application: the Spark Structured Streaming job and its launcher.

It sits above both the ETL (its sources, decoding and stream tables) and the features (the online
push), so neither of those imports it.
"""
