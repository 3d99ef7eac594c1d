"""Values combinations every chart check renders: each feature on at least once."""

from __future__ import annotations

from typing import Any

EXTERNAL_REDIS: dict[str, Any] = {
    "redis": {"enabled": False},
    "externalRedis": {"existingSecret": "my-redis", "address": "redis.example:6379"},
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
                "hosts": [
                    {
                        "host": "trustcard.example.com",
                        "paths": [{"path": "/", "pathType": "Prefix"}],
                    }
                ],
                "tls": [{"secretName": "trustcard-tls", "hosts": ["trustcard.example.com"]}],
            },
            "autoscaling": {"enabled": True},
        }
    },
    "external-redis": EXTERNAL_REDIS,
    "external-redis-keda": {**EXTERNAL_REDIS, "worker": {"autoscaling": {"mode": "keda"}}},
    "network-policies": {"networkPolicy": {"enabled": True}},
    "monitoring": {
        "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}
    },
    "no-persistence-test-endpoints": {
        "redis": {"persistence": {"enabled": False}},
        "config": {"enableTestEndpoints": True},
    },
}
