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

{{/* Environment shared by api and worker containers: config, Redis connection. */}}
{{- define "trustcard.env" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "trustcard.redis.secretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "trustcard.redis.fullname" .) | quote }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.urlKey }}
{{- if .Values.externalRedis.resultBackendUrlKey }}
- name: RESULT_BACKEND_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.resultBackendUrlKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod template annotations that roll pods when the config changes. */}}
{{- define "trustcard.configChecksum" -}}
checksum/config: {{ include (print .Template.BasePath "/config/configmap.yaml") . | sha256sum }}
{{- end }}
