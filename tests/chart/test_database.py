"""The analysis database in the chart: bundled PostgreSQL or an external URL, migrations, waits."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.chart.helm import RenderError, by_kind, container, one, render_chart, render_notes
from tests.chart.variants import EXTERNAL_DATABASE, VARIANTS

WORKLOADS = {"Deployment", "StatefulSet", "Job", "Pod"}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
    return spec


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = (
        obj["metadata"]["labels"]
        if obj["kind"] == "Pod"
        else obj["spec"]["template"]["metadata"]["labels"]
    )
    return labels


def _secret_files(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """File name in the secrets volume -> (Secret, key)."""
    volumes = [v for v in _pod_spec(obj)["volumes"] if v["name"] == "secrets"]
    return {
        item["path"]: (source["secret"]["name"], item["key"])
        for volume in volumes
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


def _decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


class TestBundledPostgres:
    def test_statefulset_pinned_non_root_persistent_and_probed_with_pg_isready(self) -> None:
        postgres = one(render_chart(), "StatefulSet", "-postgresql")
        spec = _pod_spec(postgres)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 999  # the official image's postgres user
        assert spec["securityContext"]["fsGroup"] == 999
        assert spec["automountServiceAccountToken"] is False
        main = container(postgres, "postgresql")
        image, _, tag = main["image"].partition(":")
        assert image == "postgres"
        assert tag[:1].isdigit()  # a version, not latest or empty
        assert main["securityContext"]["readOnlyRootFilesystem"] is True
        assert main["resources"]["limits"]["memory"] == "1Gi"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = main[probe]["exec"]["command"]
            assert command[0] == "pg_isready"
            assert command[command.index("--host") + 1] == "127.0.0.1"
        claim = postgres["spec"]["volumeClaimTemplates"][0]
        assert claim["metadata"]["name"] == "data"
        assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
        mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        env = {item["name"]: item["value"] for item in main["env"]}
        assert env["PGDATA"].startswith(mounts["data"] + "/")  # a subdirectory, not the mount
        assert mounts["run"] == "/var/run/postgresql"  # socket dir on a read-only root

    def test_password_is_a_file_and_the_url_is_built_from_it(self) -> None:
        objects = render_chart()
        postgres = one(objects, "StatefulSet", "-postgresql")
        env = {item["name"]: item["value"] for item in container(postgres, "postgresql")["env"]}
        assert "POSTGRES_PASSWORD" not in env
        auth = next(v for v in _pod_spec(postgres)["volumes"] if v["name"] == "auth")
        secret = one(objects, "Secret", "-database")
        assert auth["secret"]["secretName"] == secret["metadata"]["name"]
        assert auth["secret"]["items"] == [{"key": "postgres-password", "path": "password"}]
        assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgresql/password"
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        password = _decoded(secret, "postgres-password")
        assert len(password) == 32
        url = urlsplit(_decoded(secret, "database-url"))
        assert url.scheme == "postgresql+psycopg"
        assert (url.username, url.password) == (env["POSTGRES_USER"], password)
        assert (url.hostname, url.port) == ("release-trustcard-postgresql", 5432)
        assert url.path == "/" + env["POSTGRES_DB"]

    def test_headless_service_on_the_postgresql_port(self) -> None:
        objects = render_chart()
        service = one(objects, "Service", "-postgresql")
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"][0]["port"] == 5432
        postgres = one(objects, "StatefulSet", "-postgresql")
        assert postgres["spec"]["serviceName"] == service["metadata"]["name"]
        assert service["spec"]["selector"].items() <= _pod_labels(postgres).items()

    def test_without_persistence_the_data_is_an_emptydir(self) -> None:
        postgres = one(
            render_chart({"database": {"bundled": {"persistence": {"enabled": False}}}}),
            "StatefulSet",
            "-postgresql",
        )
        assert "volumeClaimTemplates" not in postgres["spec"]
        assert {"name": "data", "emptyDir": {}} in _pod_spec(postgres)["volumes"]


class TestDatabaseUrlReachesThePods:
    @pytest.mark.parametrize(
        ("values", "secret", "key"),
        [
            ({}, "release-trustcard-database", "database-url"),
            (EXTERNAL_DATABASE, "trustcard-db", "url"),
        ],
        ids=["bundled", "external"],
    )
    def test_as_a_secret_file_in_api_worker_and_migration_pods_only(
        self, values: dict[str, Any], secret: str, key: str
    ) -> None:
        objects = render_chart(values)
        holders = {
            obj["metadata"]["name"]
            for obj in objects
            if obj["kind"] in WORKLOADS and "DATABASE_URL" in _secret_files(obj)
        }
        migrate = one(objects, "Job")["metadata"]["name"]
        assert holders == {"release-trustcard-api", "release-trustcard-worker", migrate}
        for name in holders:
            obj = next(
                o for o in objects if o["kind"] in WORKLOADS and o["metadata"]["name"] == name
            )
            assert _secret_files(obj)["DATABASE_URL"] == (secret, key)

    @pytest.mark.parametrize("variant", sorted(VARIANTS))
    def test_no_url_or_password_in_a_configmap_or_an_env_literal(self, variant: str) -> None:
        objects = render_chart(VARIANTS[variant])
        secrets = [
            _decoded(obj, key)
            for obj in by_kind(objects, "Secret")
            if obj["metadata"]["name"].endswith("-database")
            for key in obj["data"]
        ]
        literals: list[str] = []
        for obj in by_kind(objects, "ConfigMap"):
            literals += [f"{k}={v}" for k, v in obj.get("data", {}).items()]
        for obj in objects:
            if obj["kind"] in WORKLOADS:
                spec = _pod_spec(obj)
                for item in spec["containers"] + spec.get("initContainers", []):
                    for env in item.get("env", []):
                        assert "valueFrom" not in env or "secretKeyRef" not in env["valueFrom"]
                        literals.append(f"{env['name']}={env.get('value', '')}")
        assert not [text for text in literals if "DATABASE_URL" in text or "postgresql+" in text]
        for secret in secrets:
            assert not [text for text in literals if secret in text]


class TestMigrations:
    def test_external_database_migrates_in_a_pre_install_and_pre_upgrade_hook(self) -> None:
        objects = render_chart(EXTERNAL_DATABASE)
        job = one(objects, "Job")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
        assert job["metadata"]["name"] == "release-trustcard-migrate"
        spec = _pod_spec(job)
        assert "initContainers" not in spec  # the external database is already there
        migrate = container(job, "migrate")
        assert migrate["args"] == ["db", "upgrade"]
        # A pre-install hook runs before every other object of the release exists: it may use
        # none of them (no ConfigMap, no chart ServiceAccount, no chart-made Secret).
        created = {(obj["kind"], obj["metadata"]["name"]) for obj in objects if obj is not job}
        assert "envFrom" not in migrate
        assert ("ServiceAccount", spec.get("serviceAccountName", "default")) not in created
        for secret_name, _key in _secret_files(job).values():
            assert ("Secret", secret_name) not in created

    def test_bundled_database_migrates_in_a_job_per_revision_after_postgres_answers(self) -> None:
        objects = render_chart()
        job = one(objects, "Job")
        # Not a hook: a pre-install hook would run before PostgreSQL and its Secret exist, and a
        # post-install hook would deadlock `helm install --wait` on the waiting api/worker pods.
        assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
        assert job["metadata"]["name"] == "release-trustcard-migrate-1"  # .Release.Revision
        (wait,) = _pod_spec(job)["initContainers"]
        assert (
            wait["image"]
            == container(one(objects, "StatefulSet", "-postgresql"), "postgresql")["image"]
        )
        script = wait["command"][-1]
        assert "pg_isready --host release-trustcard-postgresql --port 5432" in script
        assert container(job, "migrate")["args"] == ["db", "upgrade"]

    @pytest.mark.parametrize("values", [{}, EXTERNAL_DATABASE], ids=["bundled", "external"])
    def test_job_limits_and_the_api_security_context(self, values: dict[str, Any]) -> None:
        objects = render_chart(
            {
                **values,
                "database": {
                    **values.get("database", {}),
                    "migrations": {"backoffLimit": 2, "activeDeadlineSeconds": 300},
                },
            }
        )
        job = one(objects, "Job")
        assert job["spec"]["backoffLimit"] == 2
        assert job["spec"]["activeDeadlineSeconds"] == 300
        assert _pod_spec(job)["restartPolicy"] == "Never"
        api = one(objects, "Deployment", "-api")
        assert _pod_spec(job)["securityContext"] == _pod_spec(api)["securityContext"]
        assert (
            container(job, "migrate")["securityContext"] == container(api, "api")["securityContext"]
        )
        assert container(job, "migrate")["image"] == container(api, "api")["image"]

    def test_migrations_off_renders_no_job_but_pods_still_wait(self) -> None:
        objects = render_chart(
            {"database": {"migrations": {"enabled": False}}, "networkPolicy": {"enabled": True}}
        )
        assert not by_kind(objects, "Job")
        assert not [
            p
            for p in by_kind(objects, "NetworkPolicy")
            if p["metadata"]["name"].endswith("-migrate")
        ]
        for name in ("-api", "-worker"):
            assert (
                _pod_spec(one(objects, "Deployment", name))["initContainers"][0]["name"]
                == "wait-for-schema"
            )


class TestPodsWaitForTheSchema:
    @pytest.mark.parametrize("values", [{}, EXTERNAL_DATABASE], ids=["bundled", "external"])
    def test_api_and_worker_init_containers_run_db_check_with_a_timeout(
        self, values: dict[str, Any]
    ) -> None:
        objects = render_chart(
            {
                **values,
                "database": {
                    **values.get("database", {}),
                    "migrations": {"waitTimeoutSeconds": 120},
                },
            }
        )
        for name, main in (("-api", "api"), ("-worker", "worker")):
            deployment = one(objects, "Deployment", name)
            (wait,) = _pod_spec(deployment)["initContainers"]
            assert wait["image"] == container(deployment, main)["image"]
            script = wait["command"][-1]
            assert wait["command"][:2] == ["sh", "-c"]
            assert "until trustcard db check; do" in script
            assert "+ 120 ))" in script
            assert wait["securityContext"] == container(deployment, main)["securityContext"]
            mounts = {m["name"]: m["mountPath"] for m in wait["volumeMounts"]}
            assert mounts["secrets"] == "/run/secrets/trustcard"
            env = {item["name"]: item["value"] for item in wait["env"]}
            assert env["TRUSTCARD_SECRETS_DIR"] == mounts["secrets"]


class TestNetworkPolicies:
    @pytest.mark.parametrize(
        "variant",
        sorted(n for n, v in VARIANTS.items() if v.get("networkPolicy", {}).get("enabled")),
    )
    def test_every_selector_matches_rendered_pods(self, variant: str) -> None:
        objects = render_chart({**VARIANTS[variant], "config": {"enableTestEndpoints": True}})
        pods = [_pod_labels(obj) for obj in objects if obj["kind"] in WORKLOADS]

        def matches(selector: dict[str, str]) -> bool:
            return any(selector.items() <= labels.items() for labels in pods)

        for policy in by_kind(objects, "NetworkPolicy"):
            name = policy["metadata"]["name"]
            assert matches(policy["spec"]["podSelector"]["matchLabels"]), f"{name} selects no pod"
            for rule in policy["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    # A peer with a namespaceSelector is outside the release (KEDA's operator).
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        assert matches(peer["podSelector"]["matchLabels"]), f"{name}: {peer}"
        workloads = [o for o in objects if o["kind"] in WORKLOADS]
        for obj in workloads:
            selected = any(
                p["spec"]["podSelector"]["matchLabels"].items() <= _pod_labels(obj).items()
                for p in by_kind(objects, "NetworkPolicy")
            )
            assert selected, f"{obj['metadata']['name']} has no NetworkPolicy"

    def test_only_api_worker_and_migration_pods_reach_postgres(self) -> None:
        objects = render_chart({"networkPolicy": {"enabled": True}})
        (rule,) = one(objects, "NetworkPolicy", "-postgresql")["spec"]["ingress"]
        components = sorted(
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]
        )
        assert components == ["api", "migrate", "worker"]
        assert rule["ports"] == [{"port": "postgresql", "protocol": "TCP"}]
        postgres = one(objects, "StatefulSet", "-postgresql")
        assert container(postgres, "postgresql")["ports"][0]["name"] == "postgresql"


class TestValidation:
    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (
                {"database": {"bundled": {"enabled": False}}},
                "no database: set database.external.existingSecret",
            ),
            (
                {"database": {"external": {"existingSecret": "db"}}},
                "database.external.existingSecret is set but database.bundled.enabled is true",
            ),
            (
                {"database": {"bundled": {"image": {"tag": ""}}}},
                "at '/database/bundled/image/tag'",
            ),
            (
                {"database": {"migrations": {"waitTimeoutSeconds": 1}}},
                "at '/database/migrations/waitTimeoutSeconds'",
            ),
            (
                {"database": {"bundled": {"username": "Bad-Name"}}},
                "at '/database/bundled/username'",
            ),
        ],
    )
    def test_bad_database_values_fail_readably(self, values: dict[str, Any], message: str) -> None:
        with pytest.raises(RenderError) as refused:
            render_chart(values)
        assert message in str(refused.value)


class TestNotes:
    def test_bundled(self) -> None:
        notes = render_notes()
        assert "Bundled PostgreSQL 17.9-bookworm: StatefulSet release-trustcard-postgresql" in notes
        assert "kubectl -n trustcard logs job/release-trustcard-migrate-1 --all-containers" in notes

    def test_external(self) -> None:
        notes = render_notes(EXTERNAL_DATABASE)
        assert 'External: DATABASE_URL from Secret trustcard-db, key "url".' in notes
        assert "hook Job release-trustcard-migrate ran `trustcard db upgrade`" in notes
