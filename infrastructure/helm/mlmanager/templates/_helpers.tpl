{{/* Names and labels. */}}
{{- define "mlmanager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlmanager.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "mlmanager.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mlmanager.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mlmanager.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mlmanager
{{ include "mlmanager.selectorLabels" . }}
{{- end }}

{{- define "mlmanager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlmanager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "server"). */}}
{{- define "mlmanager.componentLabels" -}}
{{ include "mlmanager.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mlmanager.componentSelector" -}}
{{ include "mlmanager.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mlmanager.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mlmanager.secretName" -}}
{{- default (printf "%s-secrets" (include "mlmanager.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "mlmanager.serverName" -}}
{{- printf "%s-server" (include "mlmanager.fullname" .) }}
{{- end }}

{{- define "mlmanager.postgresqlName" -}}
{{- printf "%s-postgresql" (include "mlmanager.fullname" .) }}
{{- end }}

{{- define "mlmanager.workerServiceAccount" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (printf "%s-worker" (include "mlmanager.fullname" .)) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the server keeps artifacts when no object store is configured. */}}
{{- define "mlmanager.artifactsPath" -}}/var/lib/mlmanager/artifacts{{- end }}

{{/*
Checks that a schema cannot express (they involve two values at once); each stops the
install with a message naming the values to change.
*/}}
{{- define "mlmanager.validate" -}}
{{- $db := .Values.database }}
{{- if and (not .Values.postgresql.enabled) (not $db.host) (not $db.url) (not .Values.existingSecret) }}
{{- fail "database: set database.host (or database.url, or DB_URL in existingSecret), or postgresql.enabled=true for an evaluation database in the cluster" }}
{{- end }}
{{- if and .Values.postgresql.enabled (or $db.host $db.url) }}
{{- fail "database: postgresql.enabled=true runs the database in the chart; leave database.host and database.url empty" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- if and (not $db.url) (not $db.password) }}
{{- fail "database.password is required (or database.url, or existingSecret naming a Secret with DB_PASSWORD)" }}
{{- end }}
{{- if not .Values.auth.adminPassword }}
{{- fail "auth.adminPassword is required (or existingSecret naming a Secret with MLMANAGER_ADMIN_PASSWORD)" }}
{{- end }}
{{- if not .Values.auth.secretKey }}
{{- fail "auth.secretKey is required (or existingSecret naming a Secret with MLMANAGER_SECRET_KEY)" }}
{{- end }}
{{- end }}
{{- $replicas := ternary .Values.server.autoscaling.maxReplicas .Values.server.replicaCount .Values.server.autoscaling.enabled }}
{{- if and (gt (int $replicas) 1) (not .Values.artifacts.destination) .Values.artifacts.persistence.enabled (not (has "ReadWriteMany" .Values.artifacts.persistence.accessModes)) }}
{{- fail "artifacts: more than one server replica needs artifacts.destination (an object store) or artifacts.persistence.accessModes [ReadWriteMany]" }}
{{- end }}
{{- $managed := dict "DB_HOST" "database.host" "DB_PORT" "database.port" "DB_USER" "database.user" "DB_NAME" "database.name" "DB_SCHEMA" "database.schema" "AUTH_BACKEND" "auth.backend" "MLMANAGER_ADMIN_USER" "auth.adminUser" "MLMANAGER_HOME" "the chart (the pod's volume)" "MLMANAGER_HOST" "the chart (0.0.0.0)" "MLMANAGER_PORT" "server.service.port" "MLMANAGER_ALLOWED_HOSTS" "server.allowedHosts" "MLFLOW_ARTIFACTS_DESTINATION" "artifacts.destination" "MLFLOW_URL" "the chart (the server's Service)" "GUNICORN_WORKERS" "server.gunicornWorkers" "WORKER_HOST" "the chart (0.0.0.0)" "WORKER_PORT" "worker.port" "WORKER_THREADS" "worker.threads" "NAMESPACE" "the release's namespace" }}
{{- range $name, $_ := .Values.config }}
{{- if hasKey $managed $name }}
{{- fail (printf "config.%s is set by the chart: use %s" $name (get $managed $name)) }}
{{- end }}
{{- if has $name (list "DB_PASSWORD" "DB_URL" "MLMANAGER_ADMIN_PASSWORD" "MLMANAGER_SECRET_KEY" "MLFLOW_BACKEND_STORE_URI" "MLFLOW_TRACKING_PASSWORD" "ELASTICSEARCH_PASSWORD" "ELASTICSEARCH_API_KEY" "AWS_SECRET_ACCESS_KEY" "AWS_ACCESS_KEY_ID" "AZURE_USERNAME" "AZURE_PASSWORD") }}
{{- fail (printf "config.%s is a secret: put it in extraSecretEnv or existingSecret, never in the ConfigMap" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The non-secret settings every ML Manager process reads (shared/settings.py names), for the
ConfigMap and the migration hook's copy of it.
*/}}
{{- define "mlmanager.configData" -}}
{{- $db := .Values.database }}
{{- if .Values.postgresql.enabled }}
DB_HOST: {{ include "mlmanager.postgresqlName" . | quote }}
DB_PORT: "5432"
{{- else if $db.host }}
DB_HOST: {{ $db.host | quote }}
DB_PORT: {{ $db.port | toString | quote }}
{{- end }}
DB_USER: {{ $db.user | quote }}
DB_NAME: {{ $db.name | quote }}
DB_SCHEMA: {{ $db.schema | quote }}
AUTH_BACKEND: {{ .Values.auth.backend | quote }}
MLMANAGER_ADMIN_USER: {{ .Values.auth.adminUser | quote }}
MLMANAGER_HOME: /home/mlmanager/data
MLMANAGER_HOST: 0.0.0.0
MLMANAGER_PORT: {{ .Values.server.service.port | toString | quote }}
MLMANAGER_ALLOWED_HOSTS: {{ include "mlmanager.allowedHosts" . | quote }}
MLFLOW_ARTIFACTS_DESTINATION: {{ default (include "mlmanager.artifactsPath" .) .Values.artifacts.destination | quote }}
MLFLOW_URL: {{ printf "http://%s:%v" (include "mlmanager.serverName" .) .Values.server.service.port | quote }}
GUNICORN_WORKERS: {{ .Values.server.gunicornWorkers | toString | quote }}
WORKER_HOST: 0.0.0.0
WORKER_PORT: {{ .Values.worker.port | toString | quote }}
WORKER_THREADS: {{ .Values.worker.threads | toString | quote }}
NAMESPACE: {{ .Release.Namespace | quote }}
{{- range $name, $value := .Values.config }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The secret settings, for the Secret the chart creates and the hook's copy of it. */}}
{{- define "mlmanager.secretData" -}}
{{- if .Values.database.url }}
DB_URL: {{ .Values.database.url | b64enc | quote }}
{{- end }}
{{- if .Values.database.password }}
DB_PASSWORD: {{ .Values.database.password | b64enc | quote }}
{{- end }}
MLMANAGER_ADMIN_PASSWORD: {{ .Values.auth.adminPassword | b64enc | quote }}
MLMANAGER_SECRET_KEY: {{ .Values.auth.secretKey | b64enc | quote }}
{{- range $name, $value := .Values.extraSecretEnv }}
{{ $name }}: {{ $value | toString | b64enc | quote }}
{{- end }}
{{- end }}

{{/* Host headers the server accepts: its Service names, localhost, the Ingress host. */}}
{{- define "mlmanager.allowedHosts" -}}
{{- $svc := include "mlmanager.serverName" . }}
{{- $port := .Values.server.service.port }}
{{- $hosts := list "localhost" (printf "localhost:%v" $port) }}
{{- range $name := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) }}
{{- $hosts = append $hosts $name }}
{{- $hosts = append $hosts (printf "%s:%v" $name $port) }}
{{- end }}
{{- if .Values.server.ingress.enabled }}
{{- $hosts = append $hosts .Values.server.ingress.host }}
{{- end }}
{{- join "," (concat $hosts .Values.server.allowedHosts) }}
{{- end }}

{{/* envFrom of every ML Manager container: the ConfigMap, then the Secret. */}}
{{- define "mlmanager.envFrom" -}}
- configMapRef:
    name: {{ include "mlmanager.fullname" . }}-config
- secretRef:
    name: {{ include "mlmanager.secretName" . }}
{{- end }}

{{/* Writable folders of a read-only container: the home (MLMANAGER_HOME) and /tmp. */}}
{{- define "mlmanager.scratchMounts" -}}
- name: home
  mountPath: /home/mlmanager
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "mlmanager.scratchVolumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end }}

{{/* Spread one component's pods over nodes and zones. */}}
{{- define "mlmanager.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "mlmanager.componentSelector" $ | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}
