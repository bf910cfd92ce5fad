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

{{/* Node placement: GPU pods on the gpu pool, others on the cpu pool, plus the workload's own
nodeSelector, tolerations, runtimeClassName and priorityClassName (the workload's win over the pool's).
Call with (list $ gpuCount workloadValues). */}}
{{- define "embedforge.placement" -}}
{{- $root := index . 0 -}}
{{- $pool := ternary $root.Values.nodePools.gpu $root.Values.nodePools.cpu (gt (int (index . 1)) 0) -}}
{{- $own := index . 2 | default dict -}}
{{- $selector := merge (deepCopy ($own.nodeSelector | default dict)) ($pool.nodeSelector | default dict) -}}
{{- $tolerations := concat ($pool.tolerations | default list) ($own.tolerations | default list) -}}
{{- with $own.runtimeClassName | default $pool.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $own.priorityClassName | default $pool.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $selector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A disk size (Mi, Gi or Ti, as the schema allows) in MiB. */}}
{{- define "embedforge.mebibytes" -}}
{{- $size := toString . -}}
{{- if hasSuffix "Ti" $size -}}{{ mul (trimSuffix "Ti" $size | int) 1048576 }}
{{- else if hasSuffix "Gi" $size -}}{{ mul (trimSuffix "Gi" $size | int) 1024 }}
{{- else if hasSuffix "Mi" $size -}}{{ trimSuffix "Mi" $size | int }}
{{- else -}}{{ fail (printf "disk size %q: use Mi, Gi or Ti" $size) }}
{{- end -}}
{{- end -}}

{{/* Container resources: nvidia.com/gpu added to requests and limits when gpu > 0, and an
ephemeral-storage request covering the pod's disk emptyDirs (the scheduler then places the pod
on a node with that much local disk) unless the values set one.
Call with (list resources gpuCount emptyDirSizes). */}}
{{- define "embedforge.resources" -}}
{{- $resources := deepCopy (index . 0 | default dict) -}}
{{- $gpu := int (index . 1) -}}
{{- $requests := $resources.requests | default dict -}}
{{- if gt $gpu 0 -}}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $gpu) ($resources.limits | default dict)) -}}
{{- $requests = merge (dict "nvidia.com/gpu" $gpu) $requests -}}
{{- end -}}
{{- $disk := 0 -}}
{{- range index . 2 -}}
{{- $disk = add $disk (include "embedforge.mebibytes" . | int) -}}
{{- end -}}
{{- if gt (int $disk) 0 -}}
{{- $requests = merge $requests (dict "ephemeral-storage" (printf "%dMi" (int $disk))) -}}
{{- end -}}
{{- with $requests -}}
{{- $_ := set $resources "requests" . -}}
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


{{/* The ConfigMap data of one service: its settings as <SVC>_* variables plus plain env.
Call with (list $ name svc). Also hashed into the pod's checksum/config annotation, so a
change restarts only the pods of the service it belongs to. */}}
{{- define "embedforge.configData" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index . 2 -}}
{{- $p := include "embedforge.envPrefix" $name -}}
{{- $config := $svc.config | default dict -}}
{{- $vllm := and $svc.llm $root.Values.vllm.enabled -}}
{{ $p }}GRPC_HOST: "0.0.0.0"
{{ $p }}GRPC_PORT: {{ $svc.grpcPort | quote }}
{{ $p }}STATE_DIR: {{ $root.Values.storage.mountPath | quote }}
{{ $p }}SHUTDOWN_GRACE_S: {{ $svc.shutdownGraceSeconds | quote }}
{{- with $root.Values.grpcSecurity }}
{{ $p }}TLS__ENABLED: {{ .tls.enabled | quote }}
{{- if .tls.enabled }}
{{ $p }}TLS__CERT_FILE: "/etc/embedforge/tls/tls.crt"
{{ $p }}TLS__KEY_FILE: "/etc/embedforge/tls/tls.key"
{{ $p }}TLS__CA_FILE: "/etc/embedforge/tls/ca.crt"
{{ $p }}TLS__REQUIRE_CLIENT_CERT: {{ .tls.requireClientCert | quote }}
{{ $p }}GRPC_HEALTH_PORT: {{ .tls.healthPort | quote }}
{{- end }}
{{ $p }}AUTH__ENABLED: {{ .auth.enabled | quote }}
{{- if .auth.enabled }}
{{ $p }}AUTH__TOKENS_FILE: "/etc/embedforge/auth/tokens"
{{ $p }}AUTH__OPEN_HEALTH: {{ .auth.openHealth | quote }}
{{ $p }}AUTH__OPEN_REFLECTION: {{ .auth.openReflection | quote }}
{{- end }}
{{- end }}
{{ $p }}KAFKA__BOOTSTRAP_SERVERS: {{ $root.Values.kafka.bootstrapServers | quote }}
{{ $p }}KAFKA__SECURITY_PROTOCOL: {{ $root.Values.kafka.securityProtocol | quote }}
{{- with $root.Values.kafka.saslMechanism }}
{{ $p }}KAFKA__SASL_MECHANISM: {{ . | quote }}
{{- end }}
{{- if $root.Values.kafka.tls.caSecret }}
{{ $p }}KAFKA__SSL_CAFILE: {{ printf "/etc/embedforge/kafka-ca/%s" $root.Values.kafka.tls.caKey | quote }}
{{- end }}
{{ $p }}KAFKA__SESSION_TIMEOUT_MS: {{ $root.Values.kafka.sessionTimeoutMs | quote }}
{{ $p }}KAFKA__TOPIC_PREFIX: {{ $root.Values.kafka.topicPrefix | quote }}
{{ $p }}TELEMETRY__OTLP_ENDPOINT: {{ $root.Values.telemetry.otlpEndpoint | quote }}
{{ $p }}TELEMETRY__LOG_LEVEL: {{ $root.Values.telemetry.logLevel | quote }}
{{ $p }}TELEMETRY__LOG_FORMAT: {{ $root.Values.telemetry.logFormat | quote }}
{{- if $svc.sharedStorage }}
{{ $p }}STORAGE__URI: {{ include "embedforge.storageUri" $root | quote }}
{{- end }}
# Model downloads go to the state volume, not the small /tmp.
HF_HOME: {{ printf "%s/huggingface" $root.Values.storage.mountPath | quote }}
{{- if and $svc.sharedStorage (hasPrefix "s3://" (include "embedforge.storageUri" $root)) }}
{{- with $root.Values.storage.s3.endpointUrl }}
AWS_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with $root.Values.storage.s3.region }}
AWS_REGION: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $svc.dataRoots }}
{{- if hasKey $config "DATA__ROOTS" }}
{{- fail (printf "services.%s: set the data roots in dataRoots or in config.DATA__ROOTS, not both" $name) }}
{{- end }}
{{ $p }}DATA__ROOTS: {{ toJson . | quote }}
{{- end }}
{{- if and $svc.qdrant (include "embedforge.qdrantUrl" $root) }}
{{ $p }}QDRANT__URL: {{ include "embedforge.qdrantUrl" $root | quote }}
{{- end }}
{{- if and $vllm (not (hasKey $config "LLM__MODEL")) }}
{{ $p }}LLM__MODEL: {{ printf "hosted_vllm/%s" $root.Values.vllm.servedModelName | quote }}
{{- end }}
{{- if and $vllm (not (hasKey $config "LLM__API_BASE")) }}
{{ $p }}LLM__API_BASE: {{ include "embedforge.vllmApiBase" $root | quote }}
{{- end }}
{{- range $key, $value := $root.Values.env }}
{{- include "embedforge.assertNotSecret" $key }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- range $key, $value := $config }}
{{- include "embedforge.assertNotSecret" $key }}
{{ $p }}{{ upper $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The OpenAI-compatible base URL of the chart's vLLM server. */}}
{{- define "embedforge.vllmApiBase" -}}
{{- printf "http://%s:%v/v1" (include "embedforge.componentName" (list . "vllm")) .Values.vllm.port -}}
{{- end -}}

{{/* The topics of files/topics.yaml (written from libs/topics.py by tools/topics.py) with
kafka.partitions applied, as YAML {topics: [{name, partitions, retentionMs, cleanupPolicy}]}.
A topic with partitionsOf always has that topic's count. */}}
{{- define "embedforge.topics" -}}
{{- $declared := (.Files.Get "files/topics.yaml" | fromYaml).topics }}
{{- $overrides := .Values.kafka.partitions }}
{{- $names := list }}
{{- range $declared }}{{ $names = append $names .name }}{{ end }}
{{- range $name, $_ := $overrides }}
{{- if not (has $name $names) }}
{{- fail (printf "kafka.partitions.%s: no such topic; libs/topics.py declares %s" $name (join ", " $names)) }}
{{- end }}
{{- end }}
{{- $topics := list }}
{{- range $declared }}
{{- if and .partitionsOf (hasKey $overrides .name) }}
{{- fail (printf "kafka.partitions.%s: this topic always has the partitions of %s; set kafka.partitions.%s instead" .name .partitionsOf .partitionsOf) }}
{{- end }}
{{- $partitions := index $overrides (.partitionsOf | default .name) | default .partitions }}
{{- $topics = append $topics (dict "name" .name "partitions" (int $partitions) "retentionMs" (int64 .retentionMs) "cleanupPolicy" .cleanupPolicy) }}
{{- end }}
{{- dict "topics" $topics | toYaml }}
{{- end -}}

{{/* The Secret holding the gRPC certificate (tls.crt, tls.key, ca.crt) and the one holding the tokens file. */}}
{{- define "embedforge.grpcTlsSecret" -}}
{{- .Values.grpcSecurity.tls.existingSecret | default (include "embedforge.componentName" (list . "grpc-tls")) -}}
{{- end -}}

{{- define "embedforge.grpcTokensSecret" -}}
{{- .Values.grpcSecurity.auth.existingSecret | default (include "embedforge.componentName" (list . "grpc-tokens")) -}}
{{- end -}}

{{/* The port kubelet probes and `helm test` reach: the plaintext health-only port when TLS is on. */}}
{{- define "embedforge.probePort" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.grpcSecurity.tls.enabled -}}
{{- $root.Values.grpcSecurity.tls.healthPort -}}
{{- else -}}
{{- (index . 1).grpcPort -}}
{{- end -}}
{{- end -}}
