{{/* Names, labels and the pieces every workload shares. */}}

{{- define "embedforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "embedforge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Object name of a component: <fullname>-<component>. Call with (list $ "taskgen"). */}}
{{- define "embedforge.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "embedforge.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "embedforge.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "embedforge.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "embedforge.labels" -}}
{{- $root := index . 0 -}}
{{ include "embedforge.selectorLabels" . }}
app.kubernetes.io/part-of: embedforge
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Settings prefix of a service: TASKGEN_ for taskgen (libs/settings.py). */}}
{{- define "embedforge.envPrefix" -}}
{{- printf "%s_" (upper .) -}}
{{- end -}}

{{/* Image of a service. Call with (list $ "taskgen" $svc). */}}
{{- define "embedforge.image" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $img := (index . 2).image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/%s" $root.Values.image.registry $name) -}}
{{- $tag := $img.tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- if contains "@" $tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- else -}}
{{- printf "%s:%s%s" $repo $tag ($img.tagSuffix | default "") -}}
{{- end -}}
{{- end -}}

{{- define "embedforge.serviceAccountName" -}}
{{- $root := index . 0 -}}
{{- $sa := (index . 2).serviceAccount | default dict -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "embedforge.componentName" (list $root (index . 1))) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Refuse configuration keys that look like credentials: those belong in Secrets. */}}
{{- define "embedforge.assertNotSecret" -}}
{{- if regexMatch "(?i)(passw|secret|api_?key|access_?key|credential|(^|_)token($|_))" . -}}
{{- fail (printf "%q looks like a credential: put it in a Secret (secretEnv, llm.existingSecret, ...), never in a ConfigMap" .) -}}
{{- end -}}
{{- end -}}

{{/* Node placement: GPU pods on the gpu pool, others on the cpu pool, plus the workload's own.
Call with (list $ gpuCount nodeSelector tolerations). */}}
{{- define "embedforge.placement" -}}
{{- $root := index . 0 -}}
{{- $pool := ternary $root.Values.nodePools.gpu $root.Values.nodePools.cpu (gt (int (index . 1)) 0) -}}
{{- $selector := merge (deepCopy (index . 2 | default dict)) ($pool.nodeSelector | default dict) -}}
{{- $tolerations := concat ($pool.tolerations | default list) (index . 3 | default list) -}}
{{- with $selector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container resources with nvidia.com/gpu added to requests and limits when gpu > 0. */}}
{{- define "embedforge.resources" -}}
{{- $resources := deepCopy (index . 0 | default dict) -}}
{{- $gpu := int (index . 1) -}}
{{- if gt $gpu 0 -}}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $gpu) ($resources.limits | default dict)) -}}
{{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" $gpu) ($resources.requests | default dict)) -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{- define "embedforge.qdrantUrl" -}}
{{- if .Values.qdrant.inCluster.enabled -}}
{{- printf "http://%s:6333" (include "embedforge.componentName" (list . "qdrant")) -}}
{{- else -}}
{{- .Values.qdrant.url -}}
{{- end -}}
{{- end -}}

{{- define "embedforge.llmSecretName" -}}
{{- .Values.llm.existingSecret | default (ternary (include "embedforge.componentName" (list . "llm")) "" (not (empty .Values.llm.apiKeys))) -}}
{{- end -}}

{{- define "embedforge.storageUri" -}}
{{- .Values.storage.uri | default (printf "file://%s" .Values.storage.mountPath) -}}
{{- end -}}

{{- define "embedforge.storageClaim" -}}
{{- .Values.storage.persistence.existingClaim | default (include "embedforge.componentName" (list . "storage")) -}}
{{- end -}}

{{/* OTEL_RESOURCE_ATTRIBUTES: pod identity from the downward API plus telemetry.resourceAttributes. */}}
{{- define "embedforge.otelAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" "service.instance.id=$(POD_NAME)" -}}
{{- range $key, $value := .Values.telemetry.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%v" $key $value) -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end -}}
