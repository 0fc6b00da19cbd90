{{/* Names and labels shared by every template. */}}

{{- define "hami.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "hami" for the release "hami"; "<release>-hami" otherwise, unless fullnameOverride is set. */}}
{{- define "hami.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hami.scheduler" -}}{{ include "hami.fullname" . }}-scheduler{{- end -}}
{{- define "hami.devicePlugin" -}}{{ include "hami.fullname" . }}-device-plugin{{- end -}}
{{- define "hami.webhookName" -}}vgpu.hami.io{{- end -}}
{{- define "hami.tlsSecret" -}}{{ include "hami.scheduler" . }}-tls{{- end -}}

{{- define "hami.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hami.schedulerSelector" -}}
app.kubernetes.io/name: {{ include "hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: scheduler
{{- end -}}

{{- define "hami.devicePluginSelector" -}}
app.kubernetes.io/name: {{ include "hami.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: device-plugin
{{- end -}}

{{- define "hami.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* kube-scheduler of the cluster's own version unless pinned; "+k3s1" and similar suffixes dropped. */}}
{{- define "hami.kubeSchedulerImage" -}}
{{- $tag := .Values.scheduler.kubeScheduler.image.tag | default (regexReplaceAll "\\+.*$" .Capabilities.KubeVersion.Version "") -}}
{{ .Values.scheduler.kubeScheduler.image.repository }}:{{ $tag }}
{{- end -}}

{{/* The five resource names, in HAMi's order. */}}
{{- define "hami.resourceList" -}}
{{- $r := .Values.resourceNames -}}
{{- list $r.count $r.memory $r.cores $r.memoryPercentage $r.priority | toJson -}}
{{- end -}}

{{- define "hami.https" -}}
{{- if .Values.admissionWebhook.enabled -}}true{{- end -}}
{{- end -}}

{{/* What values.schema.json cannot say (relations between values), checked at render time. */}}
{{- define "hami.validate" -}}
{{- $s := .Values.scheduler -}}
{{- if ge (float64 $s.lockWaitSeconds) (float64 $s.extender.httpTimeoutSeconds) -}}
{{- fail (printf "scheduler.lockWaitSeconds (%v) must be below scheduler.extender.httpTimeoutSeconds (%v): a bind waiting for a locked node must answer before kube-scheduler gives up on the extender" $s.lockWaitSeconds $s.extender.httpTimeoutSeconds) -}}
{{- end -}}
{{- $le := $s.leaderElection -}}
{{- if not (and (lt (int $le.retryPeriodSeconds) (int $le.renewDeadlineSeconds)) (lt (int $le.renewDeadlineSeconds) (int $le.leaseDurationSeconds))) -}}
{{- fail (printf "scheduler.leaderElection: need retryPeriodSeconds (%v) < renewDeadlineSeconds (%v) < leaseDurationSeconds (%v), as kube-scheduler requires; the extender stops acting at the renew deadline, before another replica can take the Lease" $le.retryPeriodSeconds $le.renewDeadlineSeconds $le.leaseDurationSeconds) -}}
{{- end -}}
{{- if and .Values.admissionWebhook.certManager.enabled (not .Values.admissionWebhook.enabled) -}}
{{- fail "admissionWebhook.certManager.enabled needs admissionWebhook.enabled: the certificate serves only the webhook" -}}
{{- end -}}
{{- end -}}
