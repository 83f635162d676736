{{/* Full name of the release's objects: the release name, or <release>-kra-operator. */}}
{{- define "kra-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kra-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kra-operator.labels" -}}
{{ include "kra-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kra-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* A resource list (requests or limits) as the operator's options take it: cpu=100m,memory=1Gi. */}}
{{- define "kra-operator.resourceList" -}}
{{- $pairs := list -}}
{{- range $name, $quantity := . -}}
{{- if not (kindIs "invalid" $quantity) -}}
{{- $pairs = append $pairs (printf "%s=%v" $name $quantity) -}}
{{- end -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* The names of a list of {name: ...} references, comma-separated. */}}
{{- define "kra-operator.names" -}}
{{- $names := list -}}
{{- range . -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "kra-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kra-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kra-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kra-operator.workerImage" -}}
{{- $repository := default .Values.image.repository .Values.worker.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.worker.image.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The namespaces the operator watches; fails on a namespaces mode without any. */}}
{{- define "kra-operator.watchNamespaces" -}}
{{- if eq .Values.watch.mode "namespaces" -}}
{{- if not .Values.watch.namespaces -}}
{{- fail "watch.mode is namespaces but watch.namespaces is empty: list the namespaces to watch, or use watch.mode=cluster" -}}
{{- end -}}
{{- join "," .Values.watch.namespaces -}}
{{- end -}}
{{- end -}}

{{/*
The operator's permissions on the watched resources, shared by the ClusterRole (cluster mode)
and the Role of each watched namespace. The custom resources are never updated (the operator
never writes a spec): their status is patched through the status subresource, and KraJobs are
created and deleted only as the runs of schedules and triggers. Secrets are absent on purpose: they
reach worker pods by secretKeyRef only.
*/}}
{{- define "kra-operator.rules" -}}
- apiGroups: ["kra.dev"]
  resources: ["krajobs", "evaluationruns"]
  verbs: ["get", "list", "watch"]
# The runs of a schedule (or an EvaluationRun trigger) are children of its kind: created and
# deleted, never updated.
- apiGroups: ["kra.dev"]
  resources: ["krajobs", "evaluationruns"]
  verbs: ["create", "delete"]
- apiGroups: ["kra.dev"]
  resources: ["krajobs/status", "evaluationruns/status"]
  verbs: ["get", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Worker pods are watched (this operator's labels only) for their termination messages.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
