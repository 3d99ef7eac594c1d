{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "trustcard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: <release>-<chart> unless overridden. */}}
{{- define "trustcard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "trustcard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "trustcard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trustcard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "api"). */}}
{{- define "trustcard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trustcard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image of api, worker and test pods; the tag defaults to appVersion. */}}
{{- define "trustcard.image" -}}
{{- $image := merge (dict "tag" (default .Chart.AppVersion .Values.image.tag)) .Values.image }}
{{- include "trustcard.imageRef" (dict "root" . "image" $image) }}
{{- end }}

{{/* One image reference: [registry/]repository, then @digest (wins over the tag) or :tag.
The registry is the image's own, else global.imageRegistry (a parent chart's mirror). */}}
{{- define "trustcard.imageRef" -}}
{{- $global := .root.Values.global | default dict }}
{{- $registry := .image.registry | default (dig "imageRegistry" "" $global) | trimSuffix "/" }}
{{- $repository := ternary (printf "%s/%s" $registry .image.repository) .image.repository (ne $registry "") }}
{{- if .image.digest }}
{{- printf "%s@%s" $repository .image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString .image.tag) }}
{{- end }}
{{- end }}

{{/* imagePullSecrets of every pod: the chart's and global.imagePullSecrets (names or {name: ...}). */}}
{{- define "trustcard.imagePullSecrets" -}}
{{- $global := .Values.global | default dict }}
{{- $secrets := list }}
{{- range concat (.Values.imagePullSecrets | default list) (dig "imagePullSecrets" list $global) }}
{{- $secrets = append $secrets (ternary (dict "name" .) . (kindIs "string" .)) }}
{{- end }}
{{- with $secrets | uniq }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* ServiceAccount name of a component: (dict "root" $ "component" "api" "sa" .Values.api.serviceAccount). */}}
{{- define "trustcard.serviceAccountName" -}}
{{- if .sa.create }}
{{- default (printf "%s-%s" (include "trustcard.fullname" .root) .component) .sa.name }}
{{- else }}
{{- default "default" .sa.name }}
{{- end }}
{{- end }}

{{/* Name of the Redis Service / StatefulSet. */}}
{{- define "trustcard.redis.fullname" -}}
{{- printf "%s-redis" (include "trustcard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Secret holding the bundled Redis password. */}}
{{- define "trustcard.redis.secretName" -}}
{{- default (printf "%s-redis" (include "trustcard.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{/* Refuse contradictory values early, with a sentence a person can act on. */}}
{{- define "trustcard.validate" -}}
{{- include "trustcard.validateSecrets" . }}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) (int .Values.config.taskTimeLimit) }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must exceed config.taskTimeLimit (%d), or scale-down kills running tasks" (int .Values.worker.terminationGracePeriodSeconds) (int .Values.config.taskTimeLimit)) }}
{{- end }}
{{- if ge (int .Values.config.taskSoftTimeLimit) (int .Values.config.taskTimeLimit) }}
{{- fail (printf "config.taskSoftTimeLimit (%d) must be lower than config.taskTimeLimit (%d)" (int .Values.config.taskSoftTimeLimit) (int .Values.config.taskTimeLimit)) }}
{{- end }}
{{- if le (int .Values.config.brokerVisibilityTimeout) (int .Values.config.taskTimeLimit) }}
{{- fail (printf "config.brokerVisibilityTimeout (%d) must exceed config.taskTimeLimit (%d), or long tasks run twice" (int .Values.config.brokerVisibilityTimeout) (int .Values.config.taskTimeLimit)) }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.existingSecret) }}
{{- fail "redis.enabled=false needs externalRedis.existingSecret: a Secret holding the broker URL under externalRedis.urlKey" }}
{{- end }}
{{- if and (eq .Values.worker.autoscaling.mode "keda") (not .Values.redis.enabled) (not .Values.externalRedis.address) (not .Values.externalRedis.sentinel.enabled) }}
{{- fail "worker.autoscaling.mode=keda with an external Redis needs externalRedis.address (host:port) for the redis trigger" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.tls.enabled (not .Values.redis.tls.existingSecret) }}
{{- fail "redis.tls.enabled needs redis.tls.existingSecret: a Secret with ca.crt, tls.crt and tls.key (e.g. a cert-manager Certificate's)" }}
{{- end }}
{{- if and .Values.externalRedis.tls.certKey (not .Values.externalRedis.tls.keyKey) }}
{{- fail "externalRedis.tls.certKey needs externalRedis.tls.keyKey: the key of the client certificate's private key in the same Secret" }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.sentinel.enabled (not .Values.externalRedis.sentinel.hosts) }}
{{- fail "externalRedis.sentinel.enabled needs externalRedis.sentinel.hosts: the Sentinels as host:port" }}
{{- end }}
{{- if and .Values.redis.enabled (eq .Values.redis.architecture "sentinel") (gt (int .Values.redis.sentinel.quorum) (int .Values.redis.sentinel.replicas)) }}
{{- fail (printf "redis.sentinel.quorum (%d) must not exceed redis.sentinel.replicas (%d): no failover could ever be agreed" (int .Values.redis.sentinel.quorum) (int .Values.redis.sentinel.replicas)) }}
{{- end }}
{{- if and .Values.redis.enabled (eq .Values.redis.architecture "sentinel") (ge (int .Values.redis.sentinel.minReplicasToWrite) (int .Values.redis.sentinel.replicas)) }}
{{- fail (printf "redis.sentinel.minReplicasToWrite (%d) must be below redis.sentinel.replicas (%d): the master has only replicas-1 replicas" (int .Values.redis.sentinel.minReplicasToWrite) (int .Values.redis.sentinel.replicas)) }}
{{- end }}
{{- if gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas) }}
{{- fail "worker.autoscaling.minReplicas must not exceed worker.autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.monitoring.podMonitor.enabled (not .Values.worker.metrics.enabled) }}
{{- fail "monitoring.podMonitor.enabled needs worker.metrics.enabled: with the worker's /metrics off there is nothing to scrape" }}
{{- end }}
{{- if and .Values.monitoring.prometheusRule.enabled (not .Values.worker.metrics.enabled) }}
{{- fail "monitoring.prometheusRule.enabled needs worker.metrics.enabled: the task alerts read the workers' metrics, and without them TrustcardQueueNotConsumed would fire whenever tasks wait" }}
{{- end }}
{{- include "trustcard.flower.validate" . }}
{{- if and .Values.database.bundled.enabled .Values.database.external.existingSecret }}
{{- fail "database.external.existingSecret is set but database.bundled.enabled is true: choose one (set database.bundled.enabled=false to use the external database)" }}
{{- end }}
{{- if and (not .Values.database.bundled.enabled) (not .Values.database.external.existingSecret) }}
{{- fail "no database: set database.external.existingSecret (a Secret holding the DATABASE_URL under database.external.key), or database.bundled.enabled=true for the bundled PostgreSQL" }}
{{- end }}
{{- end }}

{{/* Environment shared by api and worker containers (secrets arrive as files, see below). */}}
{{- define "trustcard.env" -}}
- name: TRUSTCARD_SECRETS_DIR
  value: /run/secrets/trustcard
{{- if .Values.redis.enabled }}
- name: REDIS_URL
  value: {{ printf "%s://%s/%s" (ternary "rediss" "redis" .Values.redis.tls.enabled) (include "trustcard.redis.urlHost" .) (include "trustcard.redis.databaseIndex" .) | quote }}
{{- end }}
{{- include "trustcard.redisTls.env" . }}
{{- include "trustcard.sentinel.env" . }}
{{- end }}

{{/* OpenTelemetry variables of one component: (dict "root" $ "component" "api"); none when tracing.otlpEndpoint is empty. */}}
{{- define "trustcard.tracingEnv" -}}
{{- with .root.Values.tracing.otlpEndpoint -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_SERVICE_NAME
  value: trustcard-{{ $.component }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.root.Values.tracing.samplingRatio | toString | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- $attributes := dict "k8s.namespace.name" $.root.Release.Namespace "k8s.deployment.name" (printf "%s-%s" (include "trustcard.fullname" $.root) $.component) "k8s.container.name" $.component "service.version" (default $.root.Chart.AppVersion $.root.Values.image.tag) }}
{{- $attributes = merge (deepCopy $.root.Values.tracing.resourceAttributes) $attributes }}
{{- $pairs := list "k8s.pod.name=$(POD_NAME)" }}
{{- range $key := keys $attributes | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $key (get $attributes $key)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $pairs | quote }}
{{- end }}
{{- end }}

{{/* Secret volume read by Settings: files named REDIS_PASSWORD, or REDIS_URL (+ RESULT_BACKEND_URL), DATABASE_URL, API_KEYS. */}}
{{- define "trustcard.secretsVolume" -}}
{{- $root := .root }}
- name: secrets
  projected:
    defaultMode: 0400
    sources:
      {{- if .redis }}
      {{- if $root.Values.redis.enabled }}
      - secret:
          name: {{ include "trustcard.redis.secretName" $root }}
          items:
            - key: {{ $root.Values.redis.auth.existingSecretPasswordKey }}
              path: REDIS_PASSWORD
            {{- if include "trustcard.sentinel.enabled" $root }}
            # The bundled Sentinels require the same password.
            - key: {{ $root.Values.redis.auth.existingSecretPasswordKey }}
              path: REDIS_SENTINEL_PASSWORD
            {{- end }}
      {{- else }}
      - secret:
          name: {{ $root.Values.externalRedis.existingSecret }}
          items:
            - key: {{ $root.Values.externalRedis.urlKey }}
              path: REDIS_URL
            {{- with $root.Values.externalRedis.resultBackendUrlKey }}
            - key: {{ . }}
              path: RESULT_BACKEND_URL
            {{- end }}
            {{- with and (include "trustcard.sentinel.enabled" $root) $root.Values.externalRedis.sentinel.passwordKey }}
            - key: {{ . }}
              path: REDIS_SENTINEL_PASSWORD
            {{- end }}
      {{- end }}
      {{- with include "trustcard.redisTls.items" $root }}
      - secret:
          name: {{ include "trustcard.redisTls.secretName" $root }}
          items:
            {{- . | nindent 12 }}
      {{- end }}
      {{- end }}
      {{- if .database }}
      - secret:
          name: {{ include "trustcard.database.urlSecretName" $root }}
          items:
            - key: {{ include "trustcard.database.urlKey" $root }}
              path: DATABASE_URL
      {{- end }}
      {{- if and .flower (eq $root.Values.flower.auth.mode "basic") }}
      - secret:
          name: {{ include "trustcard.flower.secretName" $root }}
          items:
            - key: {{ $root.Values.flower.auth.existingSecretKey }}
              path: FLOWER_BASIC_AUTH
      {{- end }}
      {{- if and .apiKeys $root.Values.api.auth.enabled }}
      - secret:
          name: {{ include "trustcard.apiKeys.secretName" $root }}
          items:
            - key: {{ $root.Values.api.auth.existingSecretKey }}
              path: API_KEYS
      {{- end }}
{{- end }}

{{/* The Secret holding the clients' API keys (generated unless api.auth.existingSecret). */}}
{{- define "trustcard.apiKeys.secretName" -}}
{{- default (printf "%s-api-keys" (include "trustcard.fullname" .)) .Values.api.auth.existingSecret }}
{{- end }}

{{/* Where the secrets volume is mounted (files named like the settings they fill). */}}
{{- define "trustcard.secretsMount" -}}
- name: secrets
  mountPath: /run/secrets/trustcard
  readOnly: true
{{- end }}

{{/* checkov skips with their reasons, as annotations checkov reads (skip only what is argued here). */}}
{{- define "trustcard.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=Tags are immutable release versions; IfNotPresent avoids a registry round trip per pod start and works with images loaded into kind or minikube
checkov.io/skip2: CKV_K8S_43=Pinned by tag (the chart appVersion); set image.tag to name@sha256:digest to pin by digest
{{- end }}

{{/* Pod template annotations that roll pods when the config changes. */}}
{{- define "trustcard.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/config/configmap.yaml") . | sha256sum }}
{{- end }}

{{/* `for` and labels of one alert: (dict "root" $ "alert" .Values.monitoring.prometheusRule.alerts.queueDepth). */}}
{{- define "trustcard.alertMeta" -}}
for: {{ .alert.for }}
labels:
  {{- toYaml (merge (dict "severity" .alert.severity) (deepCopy .root.Values.monitoring.prometheusRule.alertLabels)) | nindent 2 }}
{{- end }}

{{/* runbook_url annotation of one alert (none without runbookBaseUrl): (dict "root" $ "name" "TrustcardQueueDepthHigh"). */}}
{{- define "trustcard.alertRunbook" -}}
{{- with .root.Values.monitoring.prometheusRule.runbookBaseUrl -}}
runbook_url: {{ printf "%s#%s" . (lower $.name) | quote }}
{{- end }}
{{- end }}


{{/* Name of the bundled PostgreSQL Service / StatefulSet. */}}
{{- define "trustcard.database.fullname" -}}
{{- printf "%s-postgresql" (include "trustcard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret the DATABASE_URL file comes from: the generated one (bundled) or the user's (external). */}}
{{- define "trustcard.database.urlSecretName" -}}
{{- if .Values.database.bundled.enabled }}
{{- .Values.database.bundled.existingSecret | default (printf "%s-database" (include "trustcard.fullname" .)) }}
{{- else }}
{{- .Values.database.external.existingSecret }}
{{- end }}
{{- end }}

{{/* Key of the URL in that Secret. */}}
{{- define "trustcard.database.urlKey" -}}
{{- if .Values.database.bundled.enabled }}database-url{{ else }}{{ .Values.database.external.key }}{{ end }}
{{- end }}

{{/* Init container of api and worker pods: wait until `trustcard db check` reports the schema at head,
so a fresh install waits for the migration Job instead of crash-looping. */}}
{{- define "trustcard.database.waitForSchema" -}}
- name: wait-for-schema
  image: {{ include "trustcard.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - sh
    - -c
    - |
      deadline=$(( $(date +%s) + {{ .Values.database.migrations.waitTimeoutSeconds }} ))
      until trustcard db check; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
          echo "the database schema is not at head after {{ .Values.database.migrations.waitTimeoutSeconds }} s: see the migration Job's logs" >&2
          exit 1
        fi
        sleep 5
      done
  env:
    - name: TRUSTCARD_SECRETS_DIR
      value: /run/secrets/trustcard
    - name: LOG_FORMAT
      value: {{ .Values.logging.format | quote }}
  resources:
    {{- toYaml .Values.database.migrations.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- include "trustcard.secretsMount" . | nindent 4 }}
{{- end }}

{{/* ---- Redis TLS (Managed Redis and TLS in the README) ---- */}}

{{/* The Redis clients' TLS values: redis.tls (bundled) or externalRedis.tls. */}}
{{- define "trustcard.redisTls.enabled" -}}
{{- if ternary .Values.redis.tls.enabled .Values.externalRedis.tls.enabled .Values.redis.enabled }}true{{ end }}
{{- end }}

{{/* Secret holding the clients' CA bundle and client certificate. */}}
{{- define "trustcard.redisTls.secretName" -}}
{{- ternary .Values.redis.tls.existingSecret .Values.externalRedis.tls.existingSecret .Values.redis.enabled }}
{{- end }}

{{/* Items of that Secret in the secrets volume, under redis-tls/ (ca.crt, tls.crt, tls.key); empty when none. */}}
{{- define "trustcard.redisTls.items" -}}
{{- if and (include "trustcard.redisTls.enabled" .) (include "trustcard.redisTls.secretName" .) }}
{{- if .Values.redis.enabled }}
- key: ca.crt
  path: redis-tls/ca.crt
{{- if .Values.redis.tls.authClients }}
- key: tls.crt
  path: redis-tls/tls.crt
- key: tls.key
  path: redis-tls/tls.key
{{- end }}
{{- else }}
{{- with .Values.externalRedis.tls.caKey }}
- key: {{ . }}
  path: redis-tls/ca.crt
{{- end }}
{{- with .Values.externalRedis.tls.certKey }}
- key: {{ . }}
  path: redis-tls/tls.crt
- key: {{ $.Values.externalRedis.tls.keyKey }}
  path: redis-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* REDIS_TLS_* of api, worker and exporter: paths of the mounted files, and verification. */}}
{{- define "trustcard.redisTls.env" -}}
{{- $items := include "trustcard.redisTls.items" . }}
{{- if contains "redis-tls/ca.crt" $items }}
- name: REDIS_TLS_CA_FILE
  value: /run/secrets/trustcard/redis-tls/ca.crt
{{- end }}
{{- if contains "redis-tls/tls.crt" $items }}
- name: REDIS_TLS_CERT_FILE
  value: /run/secrets/trustcard/redis-tls/tls.crt
- name: REDIS_TLS_KEY_FILE
  value: /run/secrets/trustcard/redis-tls/tls.key
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tls.enabled }}
- name: REDIS_TLS_VERIFY
  value: {{ .Values.externalRedis.tls.verify | quote }}
{{- end }}
{{- end }}

{{/* Database of the broker URL: the bundled Redis's (0), else the external Secret's URL when the chart
can read it at install (lookup), else externalRedis.databaseIndex. KEDA's trigger counts this database. */}}
{{- define "trustcard.redis.databaseIndex" -}}
{{- if .Values.redis.enabled }}0
{{- else }}
{{- $db := toString .Values.externalRedis.databaseIndex }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace .Values.externalRedis.existingSecret }}
{{- with (get (default dict ($secret).data) .Values.externalRedis.urlKey) }}
{{- $path := regexReplaceAll "^[a-z]+://[^/]*/?" (regexReplaceAll "[?#].*$" (b64dec .) "") "" }}
{{- if regexMatch "^[0-9]+$" $path }}{{ $db = $path }}{{ end }}
{{- end }}
{{- $db }}
{{- end }}
{{- end }}

{{/* redis-cli of the bundled Redis's probes, with TLS flags when it serves TLS. */}}
{{- define "trustcard.redis.cli" -}}
redis-cli -h 127.0.0.1{{ include "trustcard.redis.cliTls" . }}
{{- end }}

{{/* TLS flags of redis-cli in the bundled Redis's pods (empty without TLS). */}}
{{- define "trustcard.redis.cliTls" -}}
{{- if .Values.redis.tls.enabled }} --tls --cacert /run/secrets/redis-tls/ca.crt
{{- if .Values.redis.tls.authClients }} --cert /run/secrets/redis-tls/tls.crt --key /run/secrets/redis-tls/tls.key{{ end }}
{{- end }}
{{- end }}

{{/* Extra labels of a monitoring object: monitoring.labels (e.g. kube-prometheus-stack's `release`),
then the object's own labels, which win on a clash. */}}
{{- define "trustcard.monitoringLabels" -}}
{{- with merge (deepCopy (.own | default dict)) (.root.Values.monitoring.labels | default dict) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* Generated secrets change on every render where `lookup` sees no cluster (helm template, Argo CD):
refuse them when secrets.generate is false, or when Argo CD's API is among the rendering
capabilities and no cluster answers (every sync would rotate them). */}}
{{- define "trustcard.validateSecrets" -}}
{{- $missing := list }}
{{- if and .Values.redis.enabled (not .Values.redis.auth.existingSecret) }}
{{- $missing = append $missing "redis.auth.existingSecret" }}
{{- end }}
{{- if and .Values.api.auth.enabled (not .Values.api.auth.existingSecret) }}
{{- $missing = append $missing "api.auth.existingSecret" }}
{{- end }}
{{- if and .Values.database.bundled.enabled (not .Values.database.bundled.existingSecret) }}
{{- $missing = append $missing "database.bundled.existingSecret" }}
{{- end }}
{{- if include "trustcard.flower.generatesSecret" . }}
{{- $missing = append $missing "flower.auth.existingSecret" }}
{{- end }}
{{- $offline := not (lookup "v1" "Secret" .Release.Namespace "") }}
{{- $argo := and $offline (.Capabilities.APIVersions.Has "argoproj.io/v1alpha1") }}
{{- if and $missing (not .Values.secrets.generate) }}
{{- fail (printf "secrets.generate=false: set %s (Secrets you manage), or generated secrets would change on every render" (join ", " $missing)) }}
{{- else if and $missing $argo }}
{{- fail (printf "rendered for Argo CD without a cluster to look up: set %s and secrets.generate=false, or every sync would rotate the generated secrets" (join ", " $missing)) }}
{{- end }}
{{- end }}

{{/* ---- Flower (docs/flower.md) ---- */}}

{{/* Secret with Flower's basic-auth pairs: the user's, or the generated one. */}}
{{- define "trustcard.flower.secretName" -}}
{{- default (printf "%s-flower" (include "trustcard.fullname" .)) .Values.flower.auth.existingSecret }}
{{- end }}

{{/* "true" when the chart generates Flower's credentials (enabled, basic auth, no existingSecret). */}}
{{- define "trustcard.flower.generatesSecret" -}}
{{- if and .Values.flower.enabled (eq .Values.flower.auth.mode "basic") (not .Values.flower.auth.existingSecret) }}true{{ end }}
{{- end }}

{{/* Flower's path under its host: / or /<urlPrefix>/ (probes, ServiceMonitor and Ingress use it). */}}
{{- define "trustcard.flower.basePath" -}}
{{- with trimAll "/" .Values.flower.urlPrefix }}/{{ . }}/{{ else }}/{{ end }}
{{- end }}

{{/* Flower values that cannot work together. */}}
{{- define "trustcard.flower.validate" -}}
{{- if .Values.flower.enabled }}
{{- if and (eq .Values.flower.auth.mode "none-behind-proxy") (not .Values.flower.auth.acknowledgeNoAuth) }}
{{- fail "flower.auth.mode=none-behind-proxy serves every task's arguments without authentication: put an authenticating proxy (e.g. oauth2-proxy) in front as the only way in, then set flower.auth.acknowledgeNoAuth=true" }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---- Redis Sentinel (High availability (Sentinel) in the README) ---- */}}

{{/* "true" when the clients go through Sentinels: the bundled sentinel architecture, or externalRedis.sentinel. */}}
{{- define "trustcard.sentinel.enabled" -}}
{{- if .Values.redis.enabled }}
{{- if eq .Values.redis.architecture "sentinel" }}true{{ end }}
{{- else if .Values.externalRedis.sentinel.enabled }}true{{ end }}
{{- end }}

{{/* host:port of the bundled REDIS_URL: the Redis Service, or in sentinel mode the Sentinel Service
(the clients ignore it then and ask REDIS_SENTINEL_HOSTS; the URL keeps scheme and database). */}}
{{- define "trustcard.redis.urlHost" -}}
{{- if eq .Values.redis.architecture "sentinel" }}
{{- printf "%s:26379" (include "trustcard.redis.sentinelName" .) }}
{{- else }}
{{- printf "%s:6379" (include "trustcard.redis.fullname" .) }}
{{- end }}
{{- end }}

{{/* The sentinel-mode StatefulSet (named apart from the standalone one, whose serviceName is immutable). */}}
{{- define "trustcard.redis.nodeName" -}}
{{- printf "%s-redis-node" (include "trustcard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Headless Service giving each sentinel-mode pod a DNS name, ready or not. */}}
{{- define "trustcard.redis.headlessName" -}}
{{- printf "%s-redis-headless" (include "trustcard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Service in front of the bundled Sentinels. */}}
{{- define "trustcard.redis.sentinelName" -}}
{{- printf "%s-redis-sentinel" (include "trustcard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The sentinel-mode pods' DNS names in ordinal order, space-separated (what Redis and Sentinels announce). */}}
{{- define "trustcard.redis.nodeHosts" -}}
{{- $hosts := list }}
{{- range $ordinal := until (int .Values.redis.sentinel.replicas) }}
{{- $hosts = append $hosts (printf "%s-%d.%s.%s.svc.%s" (include "trustcard.redis.nodeName" $) $ordinal (include "trustcard.redis.headlessName" $) $.Release.Namespace $.Values.redis.sentinel.clusterDomain) }}
{{- end }}
{{- join " " $hosts }}
{{- end }}

{{/* REDIS_SENTINEL_HOSTS: every Sentinel as host:port, comma-separated. */}}
{{- define "trustcard.sentinel.hosts" -}}
{{- if .Values.redis.enabled }}
{{- $hosts := list }}
{{- range splitList " " (include "trustcard.redis.nodeHosts" .) }}
{{- $hosts = append $hosts (printf "%s:26379" .) }}
{{- end }}
{{- join "," $hosts }}
{{- else }}
{{- join "," .Values.externalRedis.sentinel.hosts }}
{{- end }}
{{- end }}

{{/* Ports of externalRedis.sentinel.hosts, space-separated (Flower's egress policy). */}}
{{- define "trustcard.sentinel.ports" -}}
{{- $ports := list }}
{{- range .Values.externalRedis.sentinel.hosts }}
{{- $ports = append $ports (splitList ":" . | last) }}
{{- end }}
{{- join " " $ports }}
{{- end }}

{{/* REDIS_SENTINEL_MASTER_NAME. */}}
{{- define "trustcard.sentinel.masterName" -}}
{{- ternary .Values.redis.sentinel.masterName .Values.externalRedis.sentinel.masterName .Values.redis.enabled }}
{{- end }}

{{/* REDIS_SENTINEL_* of api, worker and exporter (the password comes as a file); none without Sentinel. */}}
{{- define "trustcard.sentinel.env" -}}
{{- if include "trustcard.sentinel.enabled" . }}
- name: REDIS_SENTINEL_HOSTS
  value: {{ include "trustcard.sentinel.hosts" . | quote }}
- name: REDIS_SENTINEL_MASTER_NAME
  value: {{ include "trustcard.sentinel.masterName" . | quote }}
{{- if .Values.redis.sentinel.waitReplicas }}
- name: REDIS_WAIT_REPLICAS
  value: {{ .Values.redis.sentinel.waitReplicas | quote }}
- name: REDIS_WAIT_TIMEOUT_MS
  value: {{ .Values.redis.sentinel.waitTimeoutMs | quote }}
{{- end }}
{{- end }}
{{- end }}
