{{- define "granary.secretName" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecret }}{{ else }}{{ .Release.Name }}-granary{{ end -}}
{{- end -}}
