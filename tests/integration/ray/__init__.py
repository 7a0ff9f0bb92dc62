"""Ray job launch against a real local Ray cluster."""
