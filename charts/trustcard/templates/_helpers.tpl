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
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "api"). */}}
{{- define "trustcard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trustcard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image of api, worker and test pods; the tag defaults to appVersion. */}}
{{- define "trustcard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
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
{{- if and (eq .Values.worker.autoscaling.mode "keda") (not .Values.redis.enabled) (not .Values.externalRedis.address) }}
{{- fail "worker.autoscaling.mode=keda with an external Redis needs externalRedis.address (host:port) for the redis trigger" }}
{{- end }}
{{- if gt (int .Values.worker.autoscaling.minReplicas) (int .Values.worker.autoscaling.maxReplicas) }}
{{- fail "worker.autoscaling.minReplicas must not exceed worker.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}

{{/* Environment shared by api and worker containers (secrets arrive as files, see below). */}}
{{- define "trustcard.env" -}}
- name: TRUSTCARD_SECRETS_DIR
  value: /run/secrets/trustcard
{{- if .Values.redis.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "trustcard.redis.fullname" .) | quote }}
{{- end }}
{{- end }}

{{/* Secret volume read by Settings: files named REDIS_PASSWORD, or REDIS_URL (+ RESULT_BACKEND_URL). */}}
{{- define "trustcard.secretsVolume" -}}
- name: secrets
  secret:
    defaultMode: 0400
    {{- if .Values.redis.enabled }}
    secretName: {{ include "trustcard.redis.secretName" . }}
    items:
      - key: {{ .Values.redis.auth.existingSecretPasswordKey }}
        path: REDIS_PASSWORD
    {{- else }}
    secretName: {{ .Values.externalRedis.existingSecret }}
    items:
      - key: {{ .Values.externalRedis.urlKey }}
        path: REDIS_URL
      {{- with .Values.externalRedis.resultBackendUrlKey }}
      - key: {{ . }}
        path: RESULT_BACKEND_URL
      {{- end }}
    {{- end }}
{{- end }}

{{/* Where the secrets volume is mounted in api and worker containers. */}}
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
