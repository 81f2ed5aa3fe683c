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
{{- if not .Values.gateway.clusterWide -}}{{ .Values.gateway.namespace | default .Release.Namespace }}{{- end -}}
{{- end -}}
