# Generated from provider.yaml by `python -m nuro_ml.provider_yaml`; do not edit by hand.
from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        'package-name': 'nuro-ml-platform',
        'name': 'nuro-ml',
        'description': 'Autonomous-vehicle ML pipelines on Airflow: Terraform provisioning, Spark ETL of MCAP drive logs,\nFeast features, GPU-capacity gating under team quotas, and training on Ray, KubeRay or Slurm.\n',
        'versions': [
            '0.1.0',
        ],
        'integrations': [
            {
                'integration-name': 'Terraform',
                'external-doc-url': 'https://developer.hashicorp.com/terraform/cli',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'MCAP',
                'external-doc-url': 'https://mcap.dev/',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'Feast',
                'external-doc-url': 'https://docs.feast.dev/',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'GPU capacity',
                'external-doc-url': 'https://kueue.sigs.k8s.io/',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'Ray',
                'external-doc-url': 'https://docs.ray.io/en/latest/cluster/running-applications/job-submission/',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'KubeRay',
                'external-doc-url': 'https://docs.ray.io/en/latest/cluster/kubernetes/',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'Slurm',
                'external-doc-url': 'https://slurm.schedmd.com/',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'Training data',
                'external-doc-url': 'https://docs.aws.amazon.com/AmazonS3/latest/API/Welcome.html',
                'tags': [
                    'software',
                ],
            },
            {
                'integration-name': 'Telemetry stream',
                'external-doc-url': 'https://spark.apache.org/docs/latest/streaming/index.html',
                'tags': [
                    'software',
                ],
            },
        ],
        'operators': [
            {
                'integration-name': 'Terraform',
                'python-modules': [
                    'nuro_ml.operators.terraform',
                ],
            },
            {
                'integration-name': 'MCAP',
                'python-modules': [
                    'nuro_ml.operators.spark',
                ],
            },
            {
                'integration-name': 'Feast',
                'python-modules': [
                    'nuro_ml.operators.feast',
                ],
            },
            {
                'integration-name': 'GPU capacity',
                'python-modules': [
                    'nuro_ml.operators.capacity',
                ],
            },
            {
                'integration-name': 'Ray',
                'python-modules': [
                    'nuro_ml.operators.ray',
                ],
            },
            {
                'integration-name': 'KubeRay',
                'python-modules': [
                    'nuro_ml.operators.kuberay',
                ],
            },
            {
                'integration-name': 'Slurm',
                'python-modules': [
                    'nuro_ml.operators.slurm',
                ],
            },
            {
                'integration-name': 'Training data',
                'python-modules': [
                    'nuro_ml.operators.training_data',
                ],
            },
            {
                'integration-name': 'Telemetry stream',
                'python-modules': [
                    'nuro_ml.operators.stream',
                ],
            },
        ],
        'sensors': [
            {
                'integration-name': 'GPU capacity',
                'python-modules': [
                    'nuro_ml.sensors.gpu_capacity',
                ],
            },
            {
                'integration-name': 'Telemetry stream',
                'python-modules': [
                    'nuro_ml.sensors.stream',
                ],
            },
        ],
        'hooks': [
            {
                'integration-name': 'Terraform',
                'python-modules': [
                    'nuro_ml.hooks.terraform',
                ],
            },
            {
                'integration-name': 'Feast',
                'python-modules': [
                    'nuro_ml.hooks.feast',
                ],
            },
            {
                'integration-name': 'Ray',
                'python-modules': [
                    'nuro_ml.hooks.ray',
                ],
            },
            {
                'integration-name': 'KubeRay',
                'python-modules': [
                    'nuro_ml.hooks.kuberay',
                ],
            },
            {
                'integration-name': 'Slurm',
                'python-modules': [
                    'nuro_ml.hooks.slurm',
                ],
            },
            {
                'integration-name': 'Training data',
                'python-modules': [
                    'nuro_ml.hooks.object_storage',
                ],
            },
        ],
        'triggers': [
            {
                'integration-name': 'GPU capacity',
                'python-modules': [
                    'nuro_ml.triggers.gpu_capacity',
                ],
            },
            {
                'integration-name': 'Ray',
                'python-modules': [
                    'nuro_ml.triggers.ray',
                ],
            },
            {
                'integration-name': 'KubeRay',
                'python-modules': [
                    'nuro_ml.triggers.kuberay',
                ],
            },
            {
                'integration-name': 'Slurm',
                'python-modules': [
                    'nuro_ml.triggers.slurm',
                ],
            },
            {
                'integration-name': 'Telemetry stream',
                'python-modules': [
                    'nuro_ml.triggers.stream',
                ],
            },
        ],
        'task-decorators': [
            {
                'class-name': 'nuro_ml.decorators.ray.ray_task',
                'name': 'ray',
            },
            {
                'class-name': 'nuro_ml.decorators.kuberay.kuberay_task',
                'name': 'kuberay',
            },
        ],
        'extra-links': [
            'nuro_ml.links.ray.RayJobLink',
            'nuro_ml.links.kuberay.KubeRayDashboardLink',
        ],
        'connection-types': [
            {
                'hook-class-name': 'nuro_ml.hooks.terraform.TerraformHook',
                'hook-name': 'Terraform',
                'connection-type': 'terraform',
                'ui-field-behaviour': {
                    'hidden-fields': [
                        'schema',
                        'port',
                    ],
                    'relabeling': {
                        'host': 'PostgreSQL host (pg backend)',
                        'login': 'PostgreSQL user (pg backend)',
                        'password': 'PostgreSQL password (pg backend)',
                    },
                },
                'conn-fields': {
                    'backend_config': {
                        'label': 'Backend config (JSON object)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'variables': {
                        'label': 'Variables (JSON object)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'secret_variables': {
                        'label': 'Secret variables (JSON object)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                            'format': 'password',
                        },
                    },
                    'env': {
                        'label': 'Environment for the terraform process (JSON object)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                },
            },
            {
                'hook-class-name': 'nuro_ml.hooks.ray.RayHook',
                'hook-name': 'Ray',
                'connection-type': 'ray',
                'ui-field-behaviour': {
                    'hidden-fields': [
                        'login',
                        'password',
                    ],
                    'relabeling': {
                        'host': 'Ray dashboard / Jobs API host',
                        'schema': 'Scheme (http or https)',
                    },
                },
                'conn-fields': {
                    'headers': {
                        'label': 'HTTP headers (JSON object, e.g. authorization)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                            'format': 'password',
                        },
                    },
                    'verify': {
                        'label': 'TLS verification (true, false or CA bundle path)',
                        'schema': {
                            'type': [
                                'string',
                                'boolean',
                                'null',
                            ],
                        },
                    },
                },
            },
            {
                'hook-class-name': 'nuro_ml.hooks.feast.FeastHook',
                'hook-name': 'Feast',
                'connection-type': 'feast',
                'ui-field-behaviour': {
                    'relabeling': {
                        'host': 'Online store host (Redis or PostgreSQL)',
                        'port': 'Online store port',
                        'login': 'Online store user',
                        'password': 'Online store password',
                        'schema': 'PostgreSQL database (online store)',
                    },
                },
                'conn-fields': {
                    'feature_store': {
                        'label': 'Overrides of feature_store.yaml (JSON, deep-merged)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                            'format': 'password',
                        },
                    },
                    'online_store': {
                        'label': "Online store type (replaces the yaml's, e.g. redis)",
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'project': {
                        'label': 'Feast project',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'registry_url': {
                        'label': 'SQL registry URL (PostgreSQL)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                            'format': 'password',
                        },
                    },
                    'cache_url': {
                        'label': 'Computation cache URL',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                            'format': 'password',
                        },
                    },
                    'db': {
                        'label': 'Redis database number',
                        'schema': {
                            'type': [
                                'integer',
                                'null',
                            ],
                        },
                    },
                    'ssl': {
                        'label': 'Redis over TLS',
                        'schema': {
                            'type': [
                                'boolean',
                                'null',
                            ],
                        },
                    },
                    'redis_key_ttl_seconds': {
                        'label': 'Redis key TTL (seconds)',
                        'schema': {
                            'type': [
                                'integer',
                                'null',
                            ],
                        },
                    },
                    'fast_redis': {
                        'label': 'Use the pipelined Arrow write path',
                        'schema': {
                            'type': [
                                'boolean',
                                'null',
                            ],
                        },
                    },
                },
            },
            {
                'hook-class-name': 'nuro_ml.hooks.slurm.SlurmHook',
                'hook-name': 'Slurm',
                'connection-type': 'slurm',
                'ui-field-behaviour': {
                    'hidden-fields': [
                        'schema',
                        'host',
                        'port',
                    ],
                    'relabeling': {
                        'login': 'slurmrestd user',
                        'password': 'slurmrestd JWT',
                    },
                },
                'conn-fields': {
                    'slurm_conf': {
                        'label': 'slurm.conf path (CLI access)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'partition': {
                        'label': 'Default partition',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'account': {
                        'label': 'Account',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'rest_url': {
                        'label': 'slurmrestd URL (https://host:6820 or unix:/path.sock)',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                    'rest_api_version': {
                        'label': 'slurmrestd API version',
                        'schema': {
                            'type': [
                                'string',
                                'null',
                            ],
                        },
                    },
                },
            },
        ],
    }
