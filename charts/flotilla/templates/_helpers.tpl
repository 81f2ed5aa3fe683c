{{- define "flotilla.name" -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}

{{- define "flotilla.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "flotilla.labels" -}}
app.kubernetes.io/name: flotilla
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "flotilla.operatorSA" -}}{{ .Values.serviceAccount.operatorName | default (printf "%s-operator" (include "flotilla.name" .)) }}{{- end -}}
{{- define "flotilla.gatewaySA" -}}{{ .Values.serviceAccount.gatewayName | default (printf "%s-gateway" (include "flotilla.name" .)) }}{{- end -}}

{{- /* The one namespace the gateway watches ("" = every namespace, only with gateway.clusterWide). */ -}}
{{- define "flotilla.gatewayNamespace" -}}
{{- if not .Values.gateway.clusterWide -}}{{ include "flotilla.gatewayNamespaceDefault" . }}{{- end -}}
{{- end -}}

{{- /* The gateway's one namespace when not cluster-wide: gateway.namespace, else the operator's only watched
namespace, else the release's. */ -}}
{{- define "flotilla.gatewayNamespaceDefault" -}}
{{- if .Values.gateway.namespace -}}{{ .Values.gateway.namespace }}
{{- else if eq (len .Values.operator.namespaces) 1 -}}{{ index .Values.operator.namespaces 0 }}
{{- else -}}{{ .Release.Namespace }}{{- end -}}
{{- end -}}

{{- /* "true" when the chart deploys Redis (redis.enabled true, or auto with gateway.replicas > 1). */ -}}
{{- define "flotilla.redisDeployed" -}}
{{- if and .Values.gateway.enabled (not .Values.redis.externalUrl) -}}
{{- if eq (toString .Values.redis.enabled) "auto" -}}{{ if gt (int .Values.gateway.replicas) 1 }}true{{ end }}
{{- else if eq (toString .Values.redis.enabled) "true" -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The Redis URL the gateway uses ("" = none). */ -}}
{{- define "flotilla.redisUrl" -}}
{{- if .Values.redis.externalUrl -}}{{ .Values.redis.externalUrl }}
{{- else if include "flotilla.redisDeployed" . -}}redis://{{ include "flotilla.name" . }}-redis.{{ .Release.Namespace }}.svc:{{ .Values.redis.port }}/0
{{- end -}}
{{- end -}}

{{- define "flotilla.simulatorImage" -}}{{ .Values.operator.simulatorImage | default (include "flotilla.image" .) }}{{- end -}}

{{- /* Restricted Pod Security Standard: pod level (seccomp, non-root) and container level. */ -}}
{{- define "flotilla.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "flotilla.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
