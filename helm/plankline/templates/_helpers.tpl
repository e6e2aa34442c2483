{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "plankline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plankline.fullname" -}}
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

{{/* Name of one component's resources: <fullname>-<component>. Call with (dict "root" $ "component" "x"). */}}
{{- define "plankline.componentName" -}}
{{- printf "%s-%s" (include "plankline.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plankline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "plankline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------ */}}

{{- define "plankline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plankline.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "plankline.labels" -}}
{{ include "plankline.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: plankline
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Checkov checks this chart fails on purpose, each with its reason, as the checkov.io/skipN
     annotations of a workload (a scan lists them as skipped, with the reason). Call with
     (dict "root" $ "digest" "<image digest or empty>" ["noSecretEnv" true] ["oneShot" true]).
     Every other
     check must pass. */}}
{{- define "plankline.scanSkips" -}}
{{- $skips := dict -}}
{{- if not .noSecretEnv -}}
{{- $_ := set $skips "CKV_K8S_35" "S3 keys reach the services as env vars: plankline.stream.settings reads PLANKLINE_S3_* and Triton's S3 client AWS_* from the environment only (the gateway's tokens and TLS keys are files)" -}}
{{- end -}}
{{- if .oneShot -}}
{{- $_ := set $skips "CKV_K8S_8" "a one-shot helm test Pod that exits within seconds: no liveness to probe" -}}
{{- $_ := set $skips "CKV_K8S_9" "a one-shot helm test Pod that exits within seconds: no Service sends it traffic" -}}
{{- end -}}
{{- $_ := set $skips "CKV_K8S_15" "IfNotPresent is right for pinned tags and digests; Always adds a registry round trip to every pod start" -}}
{{- if not .digest -}}
{{- $_ := set $skips "CKV_K8S_43" "pinned tag by default (digests exist only once docker/ images are pushed): set image.digest to pin by digest, then this check passes" -}}
{{- end -}}
{{- $i := 0 -}}
{{- range $check, $reason := $skips }}
{{- $i = add1 $i }}
checkov.io/skip{{ $i }}: {{ printf "%s=%s" $check $reason | quote }}
{{- end -}}
{{- end -}}

{{/* Images ------------------------------------------------------------------------------ */}}

{{/* (dict "root" $ "component" name "image" .image) -> registry/repo:tag[@digest] */}}
{{- define "plankline.image" -}}
{{- $img := .image | default dict -}}
{{- $repo := $img.repository | default (printf "%s%s" .root.Values.image.repositoryPrefix .component) -}}
{{- if and .root.Values.image.registry (not $img.repository) -}}
{{- $repo = printf "%s/%s" .root.Values.image.registry $repo -}}
{{- end -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if $img.digest -}}
{{- printf "%s:%s@%s" $repo $tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* Endpoints ---------------------------------------------------------------------------- */}}

{{- define "plankline.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s-kafka:9092" .Release.Name -}}
{{- else -}}
{{- required "externalKafka.bootstrapServers is required when kafka.enabled=false" .Values.externalKafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "plankline.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s-minio:9000" .Release.Name -}}
{{- else -}}
{{- required "externalS3.endpoint is required when minio.enabled=false" .Values.externalS3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "plankline.s3Secure" -}}
{{- if .Values.minio.enabled -}}false{{- else -}}{{ .Values.externalS3.secure | toJson }}{{- end -}}
{{- end -}}

{{- define "plankline.s3SecretName" -}}
{{- default .Values.s3.secretName .Values.s3.existingSecret -}}
{{- end -}}

{{- define "plankline.tokensSecretName" -}}
{{- default (include "plankline.componentName" (dict "root" . "component" "gateway-tokens")) .Values.gateway.auth.existingSecret -}}
{{- end -}}

{{- define "plankline.tritonUrl" -}}
{{- printf "%s:8001" (include "plankline.componentName" (dict "root" . "component" "triton")) -}}
{{- end -}}

{{- define "plankline.modelRepository" -}}
{{- if .Values.triton.modelRepository -}}
{{- .Values.triton.modelRepository -}}
{{- else -}}
{{- $scheme := ternary "https://" "" (eq (include "plankline.s3Secure" .) "true") -}}
{{- printf "s3://%s%s/%s/%s" $scheme (include "plankline.s3Endpoint" .) .Values.s3.bucket .Values.triton.modelRepositoryPrefix -}}
{{- end -}}
{{- end -}}

{{/* Environment -------------------------------------------------------------------------- */}}

{{/* PLANKLINE_<FIELD> entries of a settings map: strings as they are, the rest as JSON (so
     1048576 stays 1048576, not 1.048576e+06, and lists are the JSON pydantic-settings reads). */}}
{{- define "plankline.settingsEnv" -}}
{{- range $field, $value := . }}
- name: {{ printf "PLANKLINE_%s" (upper $field) }}
  value: {{ ternary $value ($value | toJson) (kindIs "string" $value) | quote }}
{{- end -}}
{{- end -}}

{{/* S3 credentials from the Secret, for the services (PLANKLINE_S3_*). */}}
{{- define "plankline.s3CredentialsEnv" -}}
- name: PLANKLINE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "plankline.s3SecretName" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: PLANKLINE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "plankline.s3SecretName" . }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end -}}

{{/* Pod pieces ----------------------------------------------------------------------------- */}}

{{- define "plankline.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "plankline.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "plankline.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}
