"""TaskFlow decorators: ``@task.ray`` and ``@task.kuberay`` (registered in provider.yaml)."""
