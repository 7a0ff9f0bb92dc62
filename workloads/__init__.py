"""Entrypoints that run on the training clusters (shipped as a Ray job's ``working_dir``)."""
