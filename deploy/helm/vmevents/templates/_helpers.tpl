{{/* Names ---------------------------------------------------------------------------------- */}}
{{- define "vmevents.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vmevents.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels: common, and the selector of one stage (dict "root" $ "stage" "normalize"). -------- */}}
{{- define "vmevents.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "vmevents.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vmevents
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vmevents.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vmevents.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "vmevents.stageLabels" -}}
{{ include "vmevents.labels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "vmevents.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vmevents.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vmevents.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Credentials: the chart's Secret, or the user's. ----------------------------------------- */}}
{{- define "vmevents.secretName" -}}
{{- default (printf "%s-credentials" (include "vmevents.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "vmevents.saslEnabled" -}}
{{- if .Values.kafka.sasl.mechanism -}}true{{- end -}}
{{- end -}}

{{- define "vmevents.registryAuthEnabled" -}}
{{- if or .Values.schemaRegistry.basicAuthUserInfo (and .Values.auth.existingSecret .Values.schemaRegistry.url) -}}true{{- end -}}
{{- end -}}

{{/* Whether the chart renders its own Secret (something secret is configured inline). */}}
{{- define "vmevents.chartSecret" -}}
{{- if and (not .Values.auth.existingSecret) (or .Values.kafka.sasl.username .Values.kafka.sasl.password .Values.schemaRegistry.basicAuthUserInfo) -}}true{{- end -}}
{{- end -}}

{{/* Non-secret settings shared by the stages (ConfigMap) and the topics hook (its own copy). */}}
{{- define "vmevents.configData" -}}
KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- with .Values.kafka.sasl.mechanism }}
KAFKA_SASL_MECHANISM: {{ . | quote }}
{{- end }}
{{- if .Values.kafka.ssl.caSecretName }}
KAFKA_SSL_CA_LOCATION: "/etc/vmevents/kafka-ca/{{ .Values.kafka.ssl.caSecretKey }}"
{{- end }}
{{- if .Values.kafka.ssl.clientCertSecretName }}
KAFKA_SSL_CERTIFICATE_LOCATION: "/etc/vmevents/kafka-client/tls.crt"
KAFKA_SSL_KEY_LOCATION: "/etc/vmevents/kafka-client/tls.key"
{{- end }}
{{- range $prop, $value := .Values.kafka.extraProperties }}
{{ printf "KAFKA_%s" ($prop | upper | replace "." "_" | replace "-" "_") }}: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.schemaRegistry.url }}
SCHEMA_REGISTRY_URL: {{ . | quote }}
{{- end }}
VMEVENTS_RAW_TOPICS: {{ include "vmevents.rawTopicNames" . | quote }}
VMEVENTS_NORMALIZED_TOPIC: {{ .Values.topics.normalized.name | quote }}
VMEVENTS_DLQ_TOPIC: {{ .Values.topics.dlq.name | quote }}
VMEVENTS_CHANGELOG_TOPIC: {{ .Values.topics.changelog.name | quote }}
VMEVENTS_OPEN_OPERATIONS_TOPIC: {{ .Values.topics.openOperations.name | quote }}
VMEVENTS_OUTCOME_TOPIC_PREFIX: {{ .Values.topics.outcomes.prefix | quote }}
VMEVENTS_OUTCOME_SINGLE_TOPIC: {{ .Values.topics.outcomes.singleTopic | quote }}
VMEVENTS_NORMALIZE_GROUP: {{ .Values.config.normalizeGroup | quote }}
VMEVENTS_CORRELATE_GROUP: {{ .Values.config.correlateGroup | quote }}
VMEVENTS_PROCESSING_GUARANTEE: {{ .Values.config.processingGuarantee | quote }}
VMEVENTS_TRANSACTION_TIMEOUT_MS: {{ .Values.config.transactionTimeoutMs | int64 | quote }}
VMEVENTS_BATCH_SIZE: {{ .Values.config.batchSize | int64 | quote }}
VMEVENTS_BATCH_TIMEOUT_MS: {{ .Values.config.batchTimeoutMs | int64 | quote }}
VMEVENTS_MAX_IDLE_MS: {{ .Values.config.maxIdleMs | int64 | quote }}
VMEVENTS_DEFAULT_TIMEZONE: {{ .Values.config.defaultTimezone | quote }}
VMEVENTS_MAX_MESSAGE_BYTES: {{ .Values.config.maxMessageBytes | int64 | quote }}
VMEVENTS_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
VMEVENTS_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
VMEVENTS_CORRELATE_TIMEOUTS: {{ .Values.config.correlateTimeouts | quote }}
VMEVENTS_CORRELATE_MAX_PENDING: {{ .Values.config.correlateMaxPending | int64 | quote }}
VMEVENTS_CORRELATE_MAX_STATE_BYTES: {{ .Values.config.correlateMaxStateBytes | toString | quote }}
VMEVENTS_CORRELATE_STATE_MEMORY_FRACTION: {{ .Values.config.correlateStateMemoryFraction | toString | quote }}
VMEVENTS_CREATE_TOPICS: {{ .Values.config.createTopics | toString | quote }}
VMEVENTS_TOPIC_PARTITIONS: {{ .Values.topics.normalized.partitions | int64 | quote }}
VMEVENTS_TOPIC_REPLICATION_FACTOR: {{ .Values.topics.replicationFactor | int64 | quote }}
VMEVENTS_METRICS_PORT: {{ .Values.metricsPort | int64 | quote }}
VMEVENTS_METRICS_HOST: "0.0.0.0"
VMEVENTS_SHUTDOWN_TIMEOUT_S: {{ sub (int .Values.terminationGracePeriodSeconds) 10 | int64 | quote }}
{{- range $k, $v := .Values.config.extraEnv }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{/* Secret env of a container: secretKeyRef entries for what is configured. */}}
{{- define "vmevents.secretEnv" -}}
{{- $root := .root -}}
{{- $secret := .secretName -}}
{{- if include "vmevents.saslEnabled" $root }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.auth.secretKeys.saslUsername }}}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.auth.secretKeys.saslPassword }}}
{{- end }}
{{- if include "vmevents.registryAuthEnabled" $root }}
- name: SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO
  valueFrom:
    {{- /* An existing Secret may carry no registry credentials (open registry): then optional. */}}
    secretKeyRef: {name: {{ $secret }}, key: {{ $root.Values.auth.secretKeys.schemaRegistryUserInfo }}, optional: {{ if and $root.Values.auth.existingSecret (not $root.Values.schemaRegistry.basicAuthUserInfo) }}true{{ else }}false{{ end }}}
{{- end }}
{{- end -}}

{{- define "vmevents.secretData" -}}
{{- if .Values.kafka.sasl.username }}
{{ .Values.auth.secretKeys.saslUsername }}: {{ .Values.kafka.sasl.username | b64enc | quote }}
{{- end }}
{{- if .Values.kafka.sasl.password }}
{{ .Values.auth.secretKeys.saslPassword }}: {{ .Values.kafka.sasl.password | b64enc | quote }}
{{- end }}
{{- if .Values.schemaRegistry.basicAuthUserInfo }}
{{ .Values.auth.secretKeys.schemaRegistryUserInfo }}: {{ .Values.schemaRegistry.basicAuthUserInfo | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* TLS material: volumes and mounts shared by the stages and the topics hook. */}}
{{- define "vmevents.tlsVolumes" -}}
{{- if .Values.kafka.ssl.caSecretName }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.ssl.caSecretName }}
    items:
      - {key: {{ .Values.kafka.ssl.caSecretKey }}, path: {{ .Values.kafka.ssl.caSecretKey }}}
    defaultMode: 0440
{{- end }}
{{- if .Values.kafka.ssl.clientCertSecretName }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.ssl.clientCertSecretName }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "vmevents.tlsMounts" -}}
{{- if .Values.kafka.ssl.caSecretName }}
- {name: kafka-ca, mountPath: /etc/vmevents/kafka-ca, readOnly: true}
{{- end }}
{{- if .Values.kafka.ssl.clientCertSecretName }}
- {name: kafka-client, mountPath: /etc/vmevents/kafka-client, readOnly: true}
{{- end }}
{{- end -}}

{{/* Topics ---------------------------------------------------------------------------------- */}}
{{- define "vmevents.rawTopicNames" -}}
{{- $names := list -}}
{{- range .Values.topics.raw }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Partitions a stage can spread over: librdkafka's default assignor (range) assigns per topic,
     so a group is only as wide as its widest input topic. */}}
{{- define "vmevents.inputPartitions" -}}
{{- $root := .root -}}
{{- if eq .stage "normalize" -}}
{{- $max := 0 -}}
{{- range $root.Values.topics.raw }}{{ if gt (int .partitions) $max }}{{ $max = int .partitions }}{{ end }}{{ end -}}
{{- $max -}}
{{- else -}}
{{- $root.Values.topics.normalized.partitions | int -}}
{{- end -}}
{{- end -}}

{{- define "vmevents.inputTopicsText" -}}
{{- if eq .stage "normalize" -}}
{{- include "vmevents.rawTopicNames" .root -}}
{{- else -}}
{{- .root.Values.topics.normalized.name -}}
{{- end -}}
{{- end -}}

{{- define "vmevents.group" -}}
{{- if eq .stage "normalize" -}}{{ .root.Values.config.normalizeGroup }}{{- else -}}{{ .root.Values.config.correlateGroup }}{{- end -}}
{{- end -}}

{{/* Autoscaler engine of a stage: keda or hpa ("auto" asks the cluster). */}}
{{- define "vmevents.engine" -}}
{{- $as := (index .root.Values .stage).autoscaling -}}
{{- if eq $as.engine "auto" -}}
{{- if .root.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" -}}keda{{- else -}}hpa{{- end -}}
{{- else -}}
{{- $as.engine -}}
{{- end -}}
{{- end -}}

{{/* Render-time checks: things a schema cannot express. Each fails with one line that says what to change. */}}
{{- define "vmevents.validate" -}}
{{- $root := . -}}
{{- range $stage := list "normalize" "correlate" }}
{{- $s := index $root.Values $stage }}
{{- if $s.enabled }}
{{- $parts := include "vmevents.inputPartitions" (dict "root" $root "stage" $stage) | int }}
{{- $topics := include "vmevents.inputTopicsText" (dict "root" $root "stage" $stage) }}
{{- if $s.autoscaling.enabled }}
{{- if gt (int $s.autoscaling.maxReplicas) $parts }}
{{- fail (printf "%s.autoscaling.maxReplicas=%d exceeds %d, the partition count of its input topic(s) %s: consumers beyond the partitions sit idle. Lower maxReplicas, or raise the topic's partitions (and set the real count in topics.*.partitions)." $stage (int $s.autoscaling.maxReplicas) $parts $topics) }}
{{- end }}
{{- if gt (int $s.autoscaling.minReplicas) (int $s.autoscaling.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas=%d is greater than maxReplicas=%d." $stage (int $s.autoscaling.minReplicas) (int $s.autoscaling.maxReplicas)) }}
{{- end }}
{{- else if gt (int $s.replicaCount) $parts }}
{{- fail (printf "%s.replicaCount=%d exceeds %d, the partition count of its input topic(s) %s: consumers beyond the partitions sit idle. Lower replicaCount, or raise the topic's partitions (and set the real count in topics.*.partitions)." $stage (int $s.replicaCount) $parts $topics) }}
{{- end }}
{{- end }}
{{- end }}
{{- $needed := add (div (int $root.Values.config.transactionTimeoutMs) 1000) 15 }}
{{- if lt (int $root.Values.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "terminationGracePeriodSeconds=%d is too short: a SIGTERM may have to wait for the open transaction (config.transactionTimeoutMs=%d) and then leave the group; use at least %d." (int $root.Values.terminationGracePeriodSeconds) (int $root.Values.config.transactionTimeoutMs) $needed) }}
{{- end }}
{{- if and $root.Values.kafka.sasl.mechanism (not $root.Values.auth.existingSecret) (or (not $root.Values.kafka.sasl.username) (not $root.Values.kafka.sasl.password)) }}
{{- fail "kafka.sasl.mechanism is set but kafka.sasl.username/password are empty: set them, or name a Secret in auth.existingSecret." }}
{{- end }}
{{- if and $root.Values.kafka.sasl.mechanism (not (hasPrefix "SASL_" $root.Values.kafka.securityProtocol)) }}
{{- fail (printf "kafka.sasl.mechanism=%s needs kafka.securityProtocol SASL_SSL or SASL_PLAINTEXT (is %s)." $root.Values.kafka.sasl.mechanism $root.Values.kafka.securityProtocol) }}
{{- end }}
{{- if and $root.Values.kafka.ssl.caSecretName (not (has $root.Values.kafka.securityProtocol (list "SSL" "SASL_SSL"))) }}
{{- fail (printf "kafka.ssl.caSecretName is set but kafka.securityProtocol=%s does not use TLS (SSL or SASL_SSL)." $root.Values.kafka.securityProtocol) }}
{{- end }}
{{- if and $root.Values.schemaRegistry.basicAuthUserInfo (not (contains ":" $root.Values.schemaRegistry.basicAuthUserInfo)) }}
{{- fail "schemaRegistry.basicAuthUserInfo must be user:password." }}
{{- end }}
{{- end -}}

{{/* Pod-level pieces shared by the Deployments and the hook Job. */}}
{{- define "vmevents.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
