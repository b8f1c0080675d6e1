{{/*
Named templates. tests/deploy/render_chart.py renders this chart without Helm
and implements only the template functions this chart uses (include, if/with/
range, default, quote, toYaml, nindent, sha256sum, printf, print, trunc,
trimSuffix, required, fail, int64, add, div, eq, ne, and, not, ...): keep to
them, or extend the script with what you add.
*/}}

{{- define "granary.fullname" -}}
{{- printf "%s-granary" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The silo pods' label: the selector of the Deployment (immutable: never
change it), the Service, the PDB, the NetworkPolicy and the spread. */}}
{{- define "granary.selectorLabels" -}}
app: {{ include "granary.fullname" . }}
{{- end -}}

{{- define "granary.labels" -}}
{{ include "granary.selectorLabels" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The migrate Job's labels: not the silo pods' app label, so that the
Service, PDB and NetworkPolicy never select it. */}}
{{- define "granary.migrateLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: migrate
{{- end -}}

{{/* One image for the silos and for `silo migrate` (hook Job or initContainer). */}}
{{- define "granary.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "granary.secretName" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecret }}{{ else }}{{ include "granary.fullname" . }}{{ end -}}
{{- end -}}

{{/* The Secret the migrate hook Job reads: the existing one, or the hook
Secret in migrate-job.yaml (the release's Secret does not exist yet when
pre-install hooks run). */}}
{{- define "granary.migrateSecretName" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecret }}{{ else }}{{ include "granary.fullname" . }}-migrate{{ end -}}
{{- end -}}

{{/* A Job's pod template cannot change: a new name per revision and per
image lets Helm (and `helm template | kubectl apply`) start a new one. */}}
{{- define "granary.migrateJobName" -}}
{{- printf "%s-migrate-%d-%s" (include "granary.fullname" . | trunc 38 | trimSuffix "-") .Release.Revision (include "granary.image" . | sha256sum | trunc 8) -}}
{{- end -}}
