"""Values combinations every chart check renders: each feature on at least once."""

from __future__ import annotations

from typing import Any

EXTERNAL_REDIS: dict[str, Any] = {
    "redis": {"enabled": False},
    "externalRedis": {"existingSecret": "my-redis", "address": "redis.example:6379"},
}

EXTERNAL_DATABASE: dict[str, Any] = {
    "database": {
        "bundled": {"enabled": False},
        "external": {"existingSecret": "trustcard-db", "key": "url"},
    },
}

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "autoscaling-keda": {"worker": {"autoscaling": {"mode": "keda"}}},
    "autoscaling-none": {"worker": {"autoscaling": {"mode": "none"}, "replicas": 3}},
    "ingress-tls": {
        "api": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": [{"host": "trustcard.example.com"}],
                "tls": [{"secretName": "trustcard-tls", "hosts": ["trustcard.example.com"]}],
            },
            "autoscaling": {"enabled": True},
        }
    },
    "external-redis": EXTERNAL_REDIS,
    # TLS: bundled Redis with mutual TLS, and an external one with CA, client cert and ACL user.
    "redis-tls-mutual-keda": {
        "redis": {"tls": {"enabled": True, "existingSecret": "redis-tls", "authClients": True}},
        "worker": {"autoscaling": {"mode": "keda"}},
    },
    "external-redis-tls-keda": {
        "redis": {"enabled": False},
        "externalRedis": {
            "existingSecret": "my-redis",
            "address": "redis.example:6380",
            "usernameKey": "redis-username",
            "databaseIndex": 3,
            "tls": {
                "enabled": True,
                "existingSecret": "my-redis-tls",
                "certKey": "tls.crt",
                "keyKey": "tls.key",
            },
        },
        "worker": {"autoscaling": {"mode": "keda"}},
    },
    "external-redis-keda": {**EXTERNAL_REDIS, "worker": {"autoscaling": {"mode": "keda"}}},
    # Sentinel: bundled 3 + 3 (plain; mutual TLS, hard anti-affinity), and external Sentinels.
    "redis-sentinel-keda-network-policies": {
        "redis": {"architecture": "sentinel"},
        "worker": {"autoscaling": {"mode": "keda"}},
        "networkPolicy": {"enabled": True},
    },
    "redis-sentinel-tls-mutual": {
        "redis": {
            "architecture": "sentinel",
            "sentinel": {"masterName": "ha", "podAntiAffinity": "hard"},
            "persistence": {"enabled": False},
            "tls": {"enabled": True, "existingSecret": "redis-tls", "authClients": True},
        },
        "worker": {"autoscaling": {"mode": "keda"}},
    },
    "external-redis-sentinel-keda": {
        "redis": {"enabled": False},
        "externalRedis": {
            "existingSecret": "my-redis",
            "sentinel": {
                "enabled": True,
                "hosts": ["sentinel-0.example:26379", "sentinel-1.example:26379"],
                "masterName": "mymaster",
                "passwordKey": "sentinel-password",
            },
        },
        "worker": {"autoscaling": {"mode": "keda"}},
    },
    "c2pa-trust-anchors": {"analysis": {"c2paTrustAnchors": {"existingSecret": "c2pa-anchors"}}},
    "network-policies": {
        "networkPolicy": {
            "enabled": True,
            "apiIngressFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
            ],
            "metricsIngressFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
        }
    },
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "podMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kps"},
                "alertLabels": {"team": "platform"},
                "runbookBaseUrl": "https://runbooks.example.com/trustcard",
            },
            "grafanaDashboard": {"enabled": True, "folder": "TrustCard"},
        }
    },
    "tracing-text-logs-no-worker-metrics": {
        "tracing": {
            "otlpEndpoint": "http://otel-collector.observability:4318",
            "samplingRatio": 0.1,
            "resourceAttributes": {"deployment.environment": "staging"},
        },
        "logging": {"format": "text"},
        "worker": {"metrics": {"enabled": False}},
        "networkPolicy": {"enabled": True},
    },
    "external-database": EXTERNAL_DATABASE,
    "external-database-external-redis-network-policies": {
        **EXTERNAL_DATABASE,
        **EXTERNAL_REDIS,
        "networkPolicy": {"enabled": True},
    },
    "database-ephemeral-no-migrations": {
        "database": {
            "bundled": {
                "persistence": {"enabled": False},
                "podLabels": {"team": "data"},
                "nodeSelector": {"kubernetes.io/os": "linux"},
            },
            "migrations": {"enabled": False},
        },
        "networkPolicy": {"enabled": True},
    },
    "no-persistence-test-endpoints": {
        "redis": {"persistence": {"enabled": False}},
        "config": {"enableTestEndpoints": True},
    },
    # Flower with every option on: prefix, Ingress, state PVC, policies, ServiceMonitor, events.
    "flower": {
        "worker": {"taskEvents": True, "extraArgs": ["--without-gossip"]},
        "flower": {
            "enabled": True,
            "urlPrefix": "flower",
            "persistence": {"enabled": True},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": ["trustcard.example.com"],
                "tls": [{"secretName": "trustcard-tls", "hosts": ["trustcard.example.com"]}],
            },
            "networkPolicy": {
                "ingressFrom": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ingress"}
                        }
                    }
                ]
            },
        },
        "networkPolicy": {"enabled": True},
        "monitoring": {"serviceMonitor": {"enabled": True}},
    },
    # Flower behind an authenticating proxy, on an external TLS Redis, from managed Secrets.
    "flower-behind-proxy-external-redis-tls": {
        **EXTERNAL_REDIS,
        "externalRedis": {
            "existingSecret": "my-redis",
            "address": "redis.example:6380",
            "tls": {"enabled": True, "existingSecret": "my-redis-tls"},
        },
        "worker": {"taskEvents": True},
        "flower": {
            "enabled": True,
            "auth": {"mode": "none-behind-proxy", "acknowledgeNoAuth": True},
            "networkPolicy": {"externalRedisTo": [{"ipBlock": {"cidr": "10.20.0.0/24"}}]},
        },
        "networkPolicy": {"enabled": True},
    },
    # Argo CD / umbrella: every secret from an existingSecret, a mirror registry, a digest, labels.
    "gitops-platform": {
        "global": {"imageRegistry": "registry.corp.example", "imagePullSecrets": ["corp-pull"]},
        "commonLabels": {"team": "trust"},
        "secrets": {"generate": False},
        "image": {"digest": "sha256:" + "0123456789abcdef" * 4},
        "redis": {"auth": {"existingSecret": "trustcard-redis"}},
        "api": {"auth": {"existingSecret": "trustcard-api-keys"}, "priorityClassName": "high"},
        "worker": {"priorityClassName": "high"},
        "database": {"bundled": {"existingSecret": "trustcard-postgresql"}},
        "monitoring": {
            "labels": {"release": "kube-prometheus-stack"},
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
        },
    },
}
