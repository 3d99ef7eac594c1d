"""What the chart renders, one class per feature (Airflow-chart style)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.helm import ROOT, by_kind, container, env_map, one, render_chart
from tests.chart.variants import EXTERNAL_REDIS


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


class TestComponents:
    def test_api_and_worker_are_separate_deployments_and_redis_a_statefulset(self) -> None:
        objects = render_chart()
        deployments = {obj["metadata"]["name"] for obj in by_kind(objects, "Deployment")}
        assert deployments == {
            "release-trustcard-api",
            "release-trustcard-worker",
            "release-trustcard-exporter",
        }
        redis = one(objects, "StatefulSet", "-redis")
        claim = redis["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
        assert not by_kind(objects, "StatefulSet")[0]["metadata"]["name"].endswith("worker")

    def test_redis_has_append_only_persistence_and_a_password_file(self) -> None:
        redis = one(render_chart(), "StatefulSet", "-redis")
        script = " ".join(container(redis, "redis")["command"])
        assert "--appendonly yes" in script
        assert "requirepass" in script
        assert "/run/secrets/redis/password" in script
        volume = next(v for v in _pod_spec(redis)["volumes"] if v["name"] == "auth")
        assert volume["secret"]["secretName"] == "release-trustcard-redis"
        assert volume["secret"]["items"] == [{"key": "redis-password", "path": "password"}]

    def test_redis_password_is_generated_and_kept(self) -> None:
        secret = one(render_chart(), "Secret", "-redis")
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert len(secret["data"]["redis-password"]) > 32

    def test_no_secret_reaches_an_environment_variable(self) -> None:
        for variant in ({}, EXTERNAL_REDIS):
            for obj in render_chart(variant):
                if obj["kind"] in {"Deployment", "StatefulSet"}:
                    for item in _pod_spec(obj)["containers"]:
                        assert "secretKeyRef" not in str(item.get("env", [])), obj["metadata"][
                            "name"
                        ]

    def test_redis_service_is_headless(self) -> None:
        service = one(render_chart(), "Service", "-redis")
        assert service["spec"]["clusterIP"] == "None"


class TestCeleryValuesReachTheWorker:
    def test_defaults(self) -> None:
        config = one(render_chart(), "ConfigMap", "-config")["data"]
        assert config["WORKER_PREFETCH_MULTIPLIER"] == "1"
        assert config["WORKER_MAX_TASKS_PER_CHILD"] == "50"
        assert config["TASK_TIME_LIMIT"] == "300"
        assert config["TASK_SOFT_TIME_LIMIT"] == "240"
        assert config["ENABLE_TEST_ENDPOINTS"] == "false"

    def test_set_values_change_the_environment_and_roll_the_pods(self) -> None:
        default = render_chart()
        changed = render_chart({"worker": {"prefetchMultiplier": 2, "maxTasksPerChild": 10}})
        config = one(changed, "ConfigMap", "-config")["data"]
        assert config["WORKER_PREFETCH_MULTIPLIER"] == "2"
        assert config["WORKER_MAX_TASKS_PER_CHILD"] == "10"
        worker = one(changed, "Deployment", "-worker")
        assert worker["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
            {"configMapRef": {"name": "release-trustcard-config"}}
        ]
        annotation = "checksum/config"
        before = one(default, "Deployment", "-worker")["spec"]["template"]["metadata"][
            "annotations"
        ]
        after = worker["spec"]["template"]["metadata"]["annotations"]
        assert before[annotation] != after[annotation]


class TestGracefulShutdown:
    def test_worker_execs_celery_and_waits_past_the_hard_limit(self) -> None:
        worker = one(render_chart(), "Deployment", "-worker")
        spec = _pod_spec(worker)
        assert container(worker, "worker")["args"] == ["worker"]
        assert "command" not in container(worker, "worker")  # the image's exec-form entrypoint
        assert spec["terminationGracePeriodSeconds"] > 300

    def test_probes_do_not_use_inspect_ping(self) -> None:
        worker = container(one(render_chart(), "Deployment", "-worker"), "worker")
        assert worker["livenessProbe"]["exec"]["command"][:2] == ["trustcard", "worker-alive"]
        assert "startupProbe" in worker
        assert "inspect" not in str(worker)


class TestAutoscaling:
    def test_hpa_targets_the_worker_on_the_queue_metric(self) -> None:
        objects = render_chart()
        hpa = one(objects, "HorizontalPodAutoscaler", "-worker")
        assert hpa["spec"]["scaleTargetRef"]["name"] == "release-trustcard-worker"
        metric = hpa["spec"]["metrics"][0]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] == "trustcard_queue_depth"
        assert metric["external"]["metric"]["selector"]["matchLabels"] == {"queue": "analysis"}
        assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "10"}
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
        assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert "replicas" not in one(objects, "Deployment", "-worker")["spec"]
        assert not by_kind(objects, "ScaledObject")

    def test_keda_scaledobject_reads_the_redis_password_secret(self) -> None:
        objects = render_chart({"worker": {"autoscaling": {"mode": "keda"}}})
        scaled = one(objects, "ScaledObject")
        trigger = scaled["spec"]["triggers"][0]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == "analysis"
        assert trigger["metadata"]["address"] == "release-trustcard-redis:6379"
        auth = one(objects, "TriggerAuthentication")
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert auth["spec"]["secretTargetRef"][0]["name"] == "release-trustcard-redis"
        assert not by_kind(objects, "HorizontalPodAutoscaler")

    def test_none_sets_fixed_replicas(self) -> None:
        objects = render_chart({"worker": {"autoscaling": {"mode": "none"}, "replicas": 3}})
        assert one(objects, "Deployment", "-worker")["spec"]["replicas"] == 3
        assert not by_kind(objects, "ScaledObject")
        assert not [
            h
            for h in by_kind(objects, "HorizontalPodAutoscaler")
            if "worker" in h["metadata"]["name"]
        ]


class TestSecurity:
    def test_every_pod_is_locked_down(self) -> None:
        objects = render_chart({"config": {"enableTestEndpoints": True}})
        pods = [
            (obj, _pod_spec(obj))
            for obj in objects
            if obj["kind"] in {"Deployment", "StatefulSet", "Job"}
        ]
        pods += [(obj, obj["spec"]) for obj in by_kind(objects, "Pod")]
        assert len(pods) == 7  # api, worker, exporter, redis, postgresql, migrate, helm test
        for obj, spec in pods:
            assert spec["automountServiceAccountToken"] is False, obj["metadata"]["name"]
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for item in spec["containers"] + spec.get("initContainers", []):
                context = item["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"]["drop"] == ["ALL"]
                assert item["resources"]["requests"]
                assert item["resources"]["limits"]

    def test_app_pods_run_as_the_image_uid(self) -> None:
        objects = render_chart()
        for name in ("-api", "-worker"):
            assert (
                _pod_spec(one(objects, "Deployment", name))["securityContext"]["runAsUser"] == 10001
            )

    def test_no_secret_in_the_configmap(self) -> None:
        config = one(render_chart(), "ConfigMap", "-config")["data"]
        assert not [key for key in config if "PASSWORD" in key or "URL" in key]

    def test_network_policies_let_only_api_and_worker_reach_redis(self) -> None:
        objects = render_chart({"networkPolicy": {"enabled": True}})
        policy = one(objects, "NetworkPolicy", "-redis")
        components = [
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for peer in policy["spec"]["ingress"][0]["from"]
        ]
        assert sorted(components) == ["api", "exporter", "test", "worker"]
        assert one(objects, "NetworkPolicy", "-worker")["spec"]["policyTypes"] == ["Ingress"]

    @pytest.mark.parametrize("architecture", ["standalone", "sentinel"])
    def test_keda_operator_reaches_redis_only_in_keda_mode(self, architecture: str) -> None:
        """KEDA's operator reads the queue length from Redis (or asks its Sentinels) itself."""
        keda_peer = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
            "podSelector": {"matchLabels": {"app": "keda-operator"}},
        }
        values: dict[str, Any] = {
            "networkPolicy": {"enabled": True},
            "redis": {"architecture": architecture},
        }
        hpa_mode = one(render_chart(values), "NetworkPolicy", "-redis")["spec"]["ingress"][0]
        assert keda_peer not in hpa_mode["from"]
        values["worker"] = {"autoscaling": {"mode": "keda"}}
        rule = one(render_chart(values), "NetworkPolicy", "-redis")["spec"]["ingress"][0]
        assert keda_peer in rule["from"]
        ports = {port["port"] for port in rule["ports"]}
        assert ports == ({"redis", "sentinel"} if architecture == "sentinel" else {"redis"})


class TestExternalRedis:
    def test_no_bundled_redis_and_url_from_the_secret(self) -> None:
        objects = render_chart(EXTERNAL_REDIS)
        assert [s["metadata"]["name"] for s in by_kind(objects, "StatefulSet")] == [
            "release-trustcard-postgresql"
        ]
        # No Redis password is generated; the API keys' and the bundled database's Secrets remain.
        assert sorted(s["metadata"]["name"] for s in by_kind(objects, "Secret")) == [
            "release-trustcard-api-keys",
            "release-trustcard-database",
        ]
        api = one(objects, "Deployment", "-api")
        env = env_map(container(api, "api"))
        assert "REDIS_URL" not in env  # it comes as a file from the Secret
        assert env["TRUSTCARD_SECRETS_DIR"] == "/run/secrets/trustcard"
        volume = next(v for v in _pod_spec(api)["volumes"] if v["name"] == "secrets")
        redis_source, _database, keys_source = (s["secret"] for s in volume["projected"]["sources"])
        assert redis_source["name"] == "my-redis"
        assert redis_source["items"] == [{"key": "redis-url", "path": "REDIS_URL"}]
        assert keys_source["items"] == [{"key": "api-keys", "path": "API_KEYS"}]


class TestApiAuth:
    def test_api_keys_on_by_default_as_a_file_only_in_api_pods(self) -> None:
        objects = render_chart()
        secret = one(objects, "Secret", "-api-keys")
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert len(secret["data"]["api-keys"]) > 40  # base64 of 40 random characters
        paths = {
            name: [
                item["path"]
                for source in next(
                    v
                    for v in _pod_spec(one(objects, "Deployment", name))["volumes"]
                    if v["name"] == "secrets"
                )["projected"]["sources"]
                for item in source["secret"]["items"]
            ]
            for name in ("-api", "-worker", "-exporter")
        }
        assert paths == {
            "-api": ["REDIS_PASSWORD", "DATABASE_URL", "API_KEYS"],
            "-worker": ["REDIS_PASSWORD", "DATABASE_URL"],
            "-exporter": ["REDIS_PASSWORD"],
        }
        config = one(objects, "ConfigMap", "-config")["data"]
        assert (config["RATE_LIMIT_PER_SECOND"], config["RATE_LIMIT_BURST"]) == ("20", "40")
        assert not any("key" in name.lower() for name in config)  # no secret in the ConfigMap

    def test_auth_off_or_existing_secret(self) -> None:
        off = render_chart({"api": {"auth": {"enabled": False}}})
        assert not [s for s in by_kind(off, "Secret") if "api-keys" in s["metadata"]["name"]]
        assert "env" not in one(off, "Pod")["spec"]["containers"][0]
        mine = render_chart(
            {"api": {"auth": {"existingSecret": "clients", "existingSecretKey": "k"}}}
        )
        assert not [s for s in by_kind(mine, "Secret") if "api-keys" in s["metadata"]["name"]]
        sources = next(
            v
            for v in _pod_spec(one(mine, "Deployment", "-api"))["volumes"]
            if v["name"] == "secrets"
        )["projected"]["sources"]
        assert sources[-1]["secret"] == {
            "name": "clients",
            "items": [{"key": "k", "path": "API_KEYS"}],
        }


class TestIngressAndNotes:
    def test_ingress_with_class_hosts_and_tls(self) -> None:
        ingress = one(
            render_chart(
                {
                    "api": {
                        "ingress": {
                            "enabled": True,
                            "className": "nginx",
                            "tls": [{"secretName": "tls", "hosts": ["trustcard.local"]}],
                        }
                    }
                }
            ),
            "Ingress",
        )
        assert ingress["spec"]["ingressClassName"] == "nginx"
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "release-trustcard-api", "port": {"name": "http"}}
        assert ingress["spec"]["tls"][0]["secretName"] == "tls"


def routed(ingress: dict[str, Any], host: str, path: str) -> bool:
    """Whether a request path reaches a backend, by the Ingress API's Exact/Prefix rules."""
    for rule in ingress["spec"]["rules"]:
        if rule["host"] != host:
            continue
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and path == entry["path"]:
                return True
            # Prefix matches whole path elements: /tasks matches /tasks and /tasks/x, not /tasksx.
            prefix = entry["path"].rstrip("/")
            if entry["pathType"] == "Prefix" and (
                prefix == "" or path == prefix or path.startswith(prefix + "/")
            ):
                return True
    return False


PUBLIC_PATHS = [
    "/tasks",
    "/tasks/",
    "/tasks/8f0c6f2e-4a57-4c55-9a53-1d3f0d2c7b11",
    "/tasks/test/add",
    "/analysis/posts",
    "/analysis/posts/1f0c6f2e-4a57-4c55-9a53-1d3f0d2c7b11",
    "/claims",
    "/claims/7",
    "/health",
    "/openapi.json",
    "/docs",
    "/redoc",
]
INTERNAL_PATHS = ["/metrics", "/metrics/", "/health/ready", "/health/live", "/", "/tasksx"]


class TestIngressRoutesThePublicApiOnly:
    @pytest.mark.parametrize(
        "values",
        [
            {"api": {"ingress": {"enabled": True}}},
            yaml.safe_load((ROOT / "k8s" / "values-kind.yaml").read_text()),
            yaml.safe_load((ROOT / "k8s" / "values-minikube.yaml").read_text()),
        ],
        ids=["default", "kind", "minikube"],
    )
    def test_public_routes_in_metrics_and_probes_out(self, values: dict[str, Any]) -> None:
        ingress = one(render_chart(values), "Ingress")
        (host,) = (rule["host"] for rule in ingress["spec"]["rules"])
        assert [p for p in PUBLIC_PATHS if not routed(ingress, host, p)] == []
        assert [p for p in INTERNAL_PATHS if routed(ingress, host, p)] == []

    def test_a_host_may_still_route_its_own_paths(self) -> None:
        own = [{"path": "/api", "pathType": "Prefix"}]
        values = {"api": {"ingress": {"enabled": True, "hosts": [{"host": "a", "paths": own}]}}}
        ingress = one(render_chart(values), "Ingress")
        assert routed(ingress, "a", "/api/tasks")
        assert not routed(ingress, "a", "/tasks")

    def test_every_public_route_of_the_app_is_routed(self) -> None:
        """A route added to the API later without an Ingress path fails here."""
        from trustcard.api.main import create_app

        ingress = one(render_chart({"api": {"ingress": {"enabled": True}}}), "Ingress")
        internal = {"/metrics", "/health/ready", "/health/live"}
        paths = {
            getattr(route, "path", "")
            for route in create_app().routes
            if getattr(route, "path", "") and getattr(route, "path", "") not in internal
        }
        unrouted = sorted(p for p in paths if not routed(ingress, "trustcard.local", p))
        assert unrouted == []


class TestHelmTest:
    def test_the_test_pod_submits_add_through_the_api_service(self) -> None:
        objects = render_chart({"config": {"enableTestEndpoints": True}})
        pod = one(objects, "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        args = pod["spec"]["containers"][0]["args"]
        assert args == ["smoke", "--api-url", "http://release-trustcard-api:80"]

    def test_without_test_endpoints_it_checks_health_only(self) -> None:
        args = one(render_chart(), "Pod")["spec"]["containers"][0]["args"]
        assert args[-1] == "--health-only"


class TestExporterAndMonitoring:
    def test_exactly_one_exporter_serves_the_hpa_metric(self) -> None:
        objects = render_chart()
        exporter = one(objects, "Deployment", "-exporter")
        assert exporter["spec"]["replicas"] == 1
        assert container(exporter, "exporter")["args"][0] == "exporter"
        hpa = one(objects, "HorizontalPodAutoscaler", "-worker")
        assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "trustcard_queue_depth"

    def test_service_monitors_for_api_and_exporter(self) -> None:
        objects = render_chart({"monitoring": {"serviceMonitor": {"enabled": True}}})
        monitors = {m["metadata"]["name"]: m for m in by_kind(objects, "ServiceMonitor")}
        assert set(monitors) == {"release-trustcard-api", "release-trustcard-exporter"}
        assert monitors["release-trustcard-api"]["spec"]["endpoints"][0]["port"] == "http"
        assert monitors["release-trustcard-exporter"]["spec"]["endpoints"][0]["port"] == "metrics"
        service_ports = {
            s["metadata"]["name"]: s["spec"]["ports"][0]["name"]
            for s in by_kind(objects, "Service")
        }
        assert service_ports["release-trustcard-exporter"] == "metrics"


class TestRedisMemory:
    """Issue 14.4: the bundled Redis refuses writes at maxmemory instead of evicting keys or
    being OOM-killed; the API and worker get the eviction check, watermark and long-poll bounds."""

    @staticmethod
    def _memory_bytes(quantity: str) -> int:
        units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
        for unit, factor in units.items():
            if quantity.endswith(unit):
                return int(quantity.removesuffix(unit)) * factor
        return int(quantity)

    def test_noeviction_and_a_maxmemory_below_the_container_limit(self) -> None:
        redis = container(one(render_chart(), "StatefulSet", "-redis"), "redis")
        command = " ".join(redis["command"])
        assert "--maxmemory-policy noeviction" in command
        maxmemory = command.split("--maxmemory ", 1)[1].split()[0]
        limit = redis["resources"]["limits"]["memory"]
        assert self._memory_bytes(maxmemory) < self._memory_bytes(limit)

    def test_settings_reach_the_api(self) -> None:
        values = {
            "config": {"redisEvictionPolicyCheck": "warn", "redisMemoryHighWatermark": 0.8},
            "api": {"longPoll": {"max": 50, "perClient": 5}},
        }
        data = one(render_chart(values), "ConfigMap", "-config")["data"]
        assert data["REDIS_EVICTION_POLICY_CHECK"] == "warn"
        assert data["REDIS_MEMORY_HIGH_WATERMARK"] == "0.8"
        assert data["LONG_POLL_MAX"] == "50"
        assert data["LONG_POLL_PER_CLIENT"] == "5"


class TestC2paTrustAnchors:
    def test_none_by_default(self) -> None:
        worker = one(render_chart(), "Deployment", "-worker")
        assert "C2PA_TRUST_ANCHORS_FILE" not in env_map(container(worker, "worker"))
        assert "c2pa-trust-anchors" not in {v["name"] for v in _pod_spec(worker)["volumes"]}

    def test_existing_secret_is_mounted_as_the_file_the_worker_reads(self) -> None:
        objects = render_chart(
            {
                "analysis": {
                    "c2paTrustAnchors": {"existingSecret": "anchors", "existingSecretKey": "c.pem"}
                }
            }
        )
        worker = one(objects, "Deployment", "-worker")
        spec = container(worker, "worker")
        assert env_map(spec)["C2PA_TRUST_ANCHORS_FILE"] == "/run/secrets/c2pa/c.pem"
        mount = next(m for m in spec["volumeMounts"] if m["name"] == "c2pa-trust-anchors")
        assert (mount["mountPath"], mount["readOnly"]) == ("/run/secrets/c2pa", True)
        volume = next(v for v in _pod_spec(worker)["volumes"] if v["name"] == "c2pa-trust-anchors")
        assert volume["secret"] == {
            "secretName": "anchors",
            "items": [{"key": "c.pem", "path": "c.pem"}],
        }
        # Only workers analyse posts: the API never sees the anchors.
        api = container(one(objects, "Deployment", "-api"), "api")
        assert "C2PA_TRUST_ANCHORS_FILE" not in env_map(api)
