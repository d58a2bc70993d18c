{{/*
The alert rules, rendered into the PrometheusRule and (with default values, release "vmevents")
checked in as deploy/prometheus/vmevents-alerts.yaml for Prometheus without the Operator and for
`promtool test rules`. Thresholds come from .Values.prometheusRule.thresholds.
*/}}
{{- define "vmevents.leValue" -}}
{{- /* prometheus_client (and Prometheus 3 on scrape) write bucket bounds as Go floats: 60 -> "60.0". */ -}}
{{- $v := float64 . -}}
{{- if eq $v (floor $v) -}}{{ printf "%.1f" $v }}{{- else -}}{{ printf "%g" $v }}{{- end -}}
{{- end -}}

{{- define "vmevents.alertGroups" -}}
{{- $t := .Values.prometheusRule.thresholds -}}
{{- $full := include "vmevents.fullname" . -}}
{{- $sel := printf "job=~\"%s-(normalize|correlate)\"" $full -}}
{{- $isel := printf "job=\"%s-ingest\"" $full -}}
{{- $runbook := .Values.prometheusRule.runbookUrl -}}
{{- $extra := .Values.prometheusRule.alertLabels -}}
{{- $pendingLimit := mulf (float64 $t.pendingFraction) (float64 .Values.config.correlateMaxPending) | floor | int64 -}}
{{- $le := include "vmevents.leValue" $t.restoreSeconds -}}
groups:
  - name: vmevents.operations
    rules:
      - alert: VmeventsOperationsTimingOut
        expr: sum by (namespace, vendor, operation) (increase(vmevents_timeouts_total{ {{- $sel -}} }[1h])) > {{ $t.timeoutsPerHour }}
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.vendor }} {{ $labels.operation }}: operations started and never finished'`}}
          description: {{`'{{ $value | humanize }} {{ $labels.operation }} operations on {{ $labels.vendor }} (namespace {{ $labels.namespace }}) started in the last hour and got no end notification within their timeout: instances may be stuck mid-operation, or the vendor stopped sending the end events. See the {{ $labels.operation }}.timed_out topic for the instances.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsoperationstimingout" $runbook | quote }}
          {{- end }}
      - alert: VmeventsDeadLetters
        expr: sum by (namespace, reason) (increase(vmevents_dlq_total{ {{- $sel -}} }[10m])) > 0
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'Raw events are going to the dead letter topic ({{ $labels.reason }})'`}}
          description: {{`'{{ $value | humanize }} raw records were dead-lettered in the last 10 minutes for reason {{ $labels.reason }} (namespace {{ $labels.namespace }}): a vendor or bridge changed its format, or a producer writes something else to the raw topic. The records are on the DLQ topic with error headers.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsdeadletters" $runbook | quote }}
          {{- end }}
      - alert: VmeventsUnknownEventCodes
        expr: sum by (namespace, vendor) (increase(vmevents_unknown_codes_total{ {{- $sel -}} }[1h])) > 0
        labels:
          severity: info
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.vendor }} sends event codes vmevents does not know'`}}
          description: {{`'{{ $value | humanize }} events with codes missing from the operation table in the last hour. They are normalized mechanically and still correlated; add the codes to consumer/normalization/operations.py for canonical names.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsunknowneventcodes" $runbook | quote }}
          {{- end }}
      - alert: VmeventsPendingNearCap
        expr: max by (namespace, partition) (vmevents_pending_operations{ {{- $sel -}} }) > {{ $pendingLimit }}
        for: 10m
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'Partition {{ $labels.partition }} holds {{ $value | humanize }} pending operations'`}}
          description: {{`'Pending operations of one partition are near the cap (VMEVENTS_CORRELATE_MAX_PENDING); past it the oldest are expired as timed_out early. Check for a flood of starts without ends, or raise the cap and the correlate memory.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventspendingnearcap" $runbook | quote }}
          {{- end }}
      - alert: VmeventsStateNearBudget
        expr: |-
          sum by (namespace, pod) (vmevents_correlate_state_bytes{ {{- $sel -}} })
          > {{ $t.stateBudgetFraction }} * max by (namespace, pod) (vmevents_correlate_state_budget_bytes{ {{- $sel -}} } > 0)
        for: 10m
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.pod }} holds {{ $value | humanize1024 }}B of correlator state, near its budget'`}}
          description: {{`'The pending state of correlate pod {{ $labels.pod }} (namespace {{ $labels.namespace }}) is above `}}{{ $t.stateBudgetFraction }}{{` of its budget (VMEVENTS_CORRELATE_MAX_STATE_BYTES; auto: a fraction of the memory limit). Each partition holds an even share of it; past its share a partition evicts the operations due first as timed_out with vmevents.evicted. A flood of starts without ends (a region-wide maintenance notice) does this: add correlate replicas (up to the partitions) or raise resources.limits.memory.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsstatenearbudget" $runbook | quote }}
          {{- end }}
      - alert: VmeventsOperationsEvicted
        expr: sum by (namespace) (increase(vmevents_correlator_anomalies_total{ {{- $sel -}} ,kind="evicted"}[1h])) > 0
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $value | humanize }} operations evicted from the correlator state in the last hour'`}}
          description: {{`'Operations were reported timed_out before their deadline, with the attribute vmevents.evicted (namespace {{ $labels.namespace }}): a partition reached VMEVENTS_CORRELATE_MAX_PENDING or its share of the state budget (VMEVENTS_CORRELATE_MAX_STATE_BYTES). Nothing is dropped (each is on the timed_out topic with the flag), but its alert came before its deadline: add correlate replicas or memory.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsoperationsevicted" $runbook | quote }}
          {{- end }}
      - alert: VmeventsLateCompletions
        expr: sum by (namespace, vendor, operation) (increase(vmevents_outcomes_total{ {{- $sel -}}, after_timeout="true"}[6h])) > 0
        labels:
          severity: info
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.vendor }} {{ $labels.operation }}: operations finished after they were reported timed out'`}}
          description: {{`'{{ $value | humanize }} {{ $labels.operation }} operations on {{ $labels.vendor }} (namespace {{ $labels.namespace }}) were reported timed_out and then finished in the last 6 hours: their real outcome and duration followed on the outcome topic with after_timeout=true, and the duration histogram counts them. If this is common, the timeout is shorter than the operation really takes: raise it in VMEVENTS_CORRELATE_TIMEOUTS.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventslatecompletions" $runbook | quote }}
          {{- end }}
      - alert: VmeventsLateNotifications
        expr: sum by (namespace, vendor) (increase(vmevents_late_notifications_total{ {{- $sel -}} }[1h])) > 0
        labels:
          severity: info
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.vendor }} notifications arrive later than the allowed lateness'`}}
          description: {{`'{{ $value | humanize }} {{ $labels.vendor }} notifications arrived in the last hour more than the allowed lateness behind the newest event time of their partition (namespace {{ $labels.namespace }}). They were still applied where unambiguous and counted, but for keys without a vendor event id the outcome may then depend on arrival order. Raise VMEVENTS_CORRELATE_ALLOWED_LATENESS, or look for a partition that stalled or a backlog read out of timestamp order.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventslatenotifications" $runbook | quote }}
          {{- end }}
  - name: vmevents.pipeline
    rules:
      - alert: VmeventsConsumerLagGrowing
        expr: |-
          sum by (namespace, stage) (vmevents_consumer_lag{ {{- $sel -}} }) > {{ $t.lagMessages }}
          and
          sum by (namespace, stage) (deriv(vmevents_consumer_lag{ {{- $sel -}} }[10m])) > 0
        for: {{ $t.lagGrowingFor }}
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.stage }} is falling behind: lag {{ $value | humanize }} and growing'`}}
          description: {{`'The {{ $labels.stage }} stage (namespace {{ $labels.namespace }}) is more than the threshold behind its input and the lag keeps growing: outcomes and timeouts arrive late. Check that the autoscaler can add replicas (max replicas vs partitions), batch and transaction latency, and the brokers.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsconsumerlaggrowing" $runbook | quote }}
          {{- end }}
      - alert: VmeventsNoEvents
        expr: time() - max by (namespace, stage) (vmevents_last_event_timestamp_seconds{ {{- $sel -}} }) > {{ $t.noEventsSeconds }}
        for: 5m
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.stage }} has processed no event for {{ $value | humanizeDuration }}'`}}
          description: {{`'No record went through the {{ $labels.stage }} stage (namespace {{ $labels.namespace }}) for a long time. A fleet always has some events: check the vendor bridges that feed the raw topics, then the stage itself.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsnoevents" $runbook | quote }}
          {{- end }}
      - alert: VmeventsNoEventsSinceStart
        expr: max by (namespace, stage) (vmevents_ready{ {{- $sel -}} }) unless on (namespace, stage) max by (namespace, stage) (vmevents_last_event_timestamp_seconds{ {{- $sel -}} })
        for: {{ printf "%ds" (int64 $t.noEventsSeconds) }}
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.stage }} has processed no event since it started'`}}
          description: {{`'The {{ $labels.stage }} stage (namespace {{ $labels.namespace }}) is running but has not processed a single record since its pods started. Check the raw topic names (VMEVENTS_RAW_TOPICS), the consumer group and the producers.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsnoevents" $runbook | quote }}
          {{- end }}
      - alert: VmeventsRestoreSlow
        expr: |-
          sum by (namespace, pod) (increase(vmevents_restore_duration_seconds_bucket{ {{- $sel -}} ,le="+Inf"}[30m]))
          - sum by (namespace, pod) (increase(vmevents_restore_duration_seconds_bucket{ {{- $sel -}} ,le="{{ $le }}"}[30m]))
          > 0
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.pod }}: restoring state took longer than `}}{{ $t.restoreSeconds }}{{` s'`}}
          description: {{`'A partition restore from the changelog took more than `}}{{ $t.restoreSeconds }}{{` s in the last 30 minutes (pod {{ $labels.pod }}). The partition is not processed while it restores. The changelog may not be compacting (check cleanup.policy=compact and min.cleanable.dirty.ratio) or pending state is too large.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsrestoreslow" $runbook | quote }}
          {{- end }}
      - alert: VmeventsTransactionAborts
        expr: sum by (namespace, stage) (increase(vmevents_transaction_aborts_total{ {{- $sel -}} }[15m])) > {{ $t.abortsPer15m }}
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.stage }}: {{ $value | humanize }} Kafka transactions aborted in 15 minutes'`}}
          description: {{`'Aborted transactions are retried, so nothing is lost, but work is repeated. Frequent aborts mean fenced producers (two pods with one transactional id), transaction timeouts (batches too slow: lower VMEVENTS_BATCH_SIZE) or broker trouble.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventstransactionaborts" $runbook | quote }}
          {{- end }}
      - alert: VmeventsRebalanceStorm
        expr: sum by (namespace, stage) (increase(vmevents_rebalances_total{ {{- $sel -}} ,kind="assign"}[15m])) > {{ $t.rebalancesPer15m }}
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.stage }}: {{ $value | humanize }} partition assignments in 15 minutes'`}}
          description: {{`'The consumer group keeps rebalancing: pods crash-looping or failing probes, the autoscaler flapping, or session timeouts. Every rebalance pauses processing (and restores state in correlate).'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsrebalancestorm" $runbook | quote }}
          {{- end }}
      - alert: VmeventsNotReady
        expr: vmevents_ready{ {{- $sel -}} } == 0
        for: {{ $t.notReadyFor }}
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.pod }} ({{ $labels.stage }}) has not been ready for a while'`}}
          description: {{`'The pod has no partition assignment or is still restoring its state. GET /readyz on port 8080 says why.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsnotready" $runbook | quote }}
          {{- end }}
      - alert: VmeventsTargetDown
        expr: up{ {{- $sel -}} } == 0
        for: 5m
        labels:
          severity: critical
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'{{ $labels.job }}: {{ $labels.instance }} cannot be scraped'`}}
          description: {{`'Prometheus cannot scrape /metrics of a vmevents pod: it is down, wedged, or the network policy blocks the scrape.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventstargetdown" $runbook | quote }}
          {{- end }}
      {{- range $stage := list "normalize" "correlate" }}
      {{- if (index $.Values $stage).enabled }}
      - alert: VmeventsStageAbsent
        expr: absent(up{job="{{ $full }}-{{ $stage }}"})
        for: 15m
        labels:
          severity: critical
          stage: {{ $stage }}
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: 'No {{ $stage }} pod of {{ $full }} is scraped'
          description: 'Prometheus has no target for the {{ $stage }} stage: the Deployment is scaled to zero or gone, or the ServiceMonitor does not match.'
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsstageabsent" $runbook | quote }}
          {{- end }}
      {{- end }}
      {{- end }}
  - name: vmevents.ingest
    rules:
      - alert: VmeventsIngestAuthFailures
        expr: sum by (namespace, route, reason) (rate(vmevents_ingest_auth_failures_total{ {{- $isel -}} }[5m])) > {{ $t.ingestAuthFailuresPerSecond }}
        for: 10m
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'vmevents ingest refuses pushes on {{ $labels.route }} ({{ $labels.reason }})'`}}
          description: {{`'{{ $value | humanize }} requests/s on the {{ $labels.route }} route were refused 401/403 for {{ $labels.reason }} over 10 minutes (namespace {{ $labels.namespace }}): a credential rotated on one side only, a subscription of a topic or account not on the allow-list, or someone forging pushes. Nothing refused was written; a vendor drops what is answered 4xx.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsingestauthfailures" $runbook | quote }}
          {{- end }}
      - alert: VmeventsIngestServerErrors
        expr: (sum by (namespace, route) (rate(vmevents_ingest_requests_total{ {{- $isel -}} ,status=~"5.."}[5m])) / sum by (namespace, route) (rate(vmevents_ingest_requests_total{ {{- $isel -}} }[5m]))) > {{ $t.ingestServerErrorRatio }}
        for: 10m
        labels:
          severity: warning
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'vmevents ingest answers {{ $labels.route }} pushes with 5xx'`}}
          description: {{`'{{ $value | humanizePercentage }} of the {{ $labels.route }} route''s requests were answered 5xx over 10 minutes (namespace {{ $labels.namespace }}): the broker is slow or away (503, vendors redeliver), or ingest is overloaded (503 over its in-flight limit). Events wait at the vendor until this ends.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsingestservererrors" $runbook | quote }}
          {{- end }}
      - alert: VmeventsIngestBrokerUnavailable
        expr: min by (namespace, pod) (vmevents_ingest_broker_available{ {{- $isel -}} }) == 0
        for: {{ $t.ingestBrokerUnavailableFor }}
        labels:
          severity: critical
          {{- with $extra }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: {{`'vmevents ingest {{ $labels.pod }} cannot write to Kafka'`}}
          description: {{`'The broker has not acknowledged records from {{ $labels.pod }} (namespace {{ $labels.namespace }}): every push is answered 503 and the vendors are redelivering. Check the brokers and the pod''s Kafka credentials.'`}}
          {{- if $runbook }}
          runbook_url: {{ printf "%s#vmeventsingestbrokerunavailable" $runbook | quote }}
          {{- end }}
{{- end -}}
