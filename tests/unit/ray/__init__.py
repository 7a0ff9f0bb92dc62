"""Ray job launch: hook, trigger, operator and training workload."""
