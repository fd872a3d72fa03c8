{{/*
Names. Object names are capped at 63 characters (DNS labels); the webhook and metrics Services
append a suffix, so their base is shortened first.
*/}}
{{- define "llmops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmops.fullname" -}}
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

{{- define "llmops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Service the apiserver calls for admission reviews. */}}
{{- define "llmops.webhookServiceName" -}}
{{- printf "%s-webhook" (include "llmops.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "llmops.metricsServiceName" -}}
{{- printf "%s-metrics" (include "llmops.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "llmops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator pod; they never change across upgrades. */}}
{{- define "llmops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "llmops.labels" -}}
helm.sh/chart: {{ include "llmops.chart" . }}
{{ include "llmops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: llmops
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "llmops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Fixed ports: the operator's CLI defaults, the probes, the Services and the NetworkPolicy agree on them. */}}
{{/* The ValidatingWebhookConfiguration the operator creates and keeps (llmops/operators/main.py WebhookOptions). */}}
{{- define "llmops.webhookConfigurationName" -}}validate.llmops.io{{- end -}}

{{- define "llmops.metricsPort" -}}8080{{- end -}}
{{- define "llmops.healthPort" -}}8081{{- end -}}
{{- define "llmops.webhookPort" -}}9443{{- end -}}

{{/*
RBAC rules for namespaced objects: our resources, the children the operators write, Events and
the Secrets the operator reads (get; create: a ModelDeployment's feedback key, made once, never
listed, changed or deleted by the operator: its owner reference deletes it). A ClusterRole carries them when the operator watches every
namespace, a Role per namespace otherwise. No wildcards anywhere.
Least privilege (docs/security.md; tests/reliability/rbac_expected.txt is what the account can do):
no `update` anywhere, since nothing sends a PUT (children are server-side applied, status and kopf's
bookkeeping are PATCHes, runs are created); Events are created once, by kopf (core/v1), never patched;
of Ray only the RayJobs the TrainingJobs own (KubeRay makes their RayClusters and reports in the
RayJob's status, read with the RayJob).
*/}}
{{- define "llmops.namespacedRules" -}}
- apiGroups: ["llmops.io"]
  resources: ["retrainpolicies", "modelretirements"]
  verbs: ["get", "list", "watch", "patch"]
{{- /* A ModelRetirement's drain points ModelDeployments at the replacement or suspends them, and
       its Delete step deletes the suspended ones. */}}
- apiGroups: ["llmops.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch", "delete"]
{{- /* RetrainPolicy runs are TrainingJobs: it creates them, deletes those beyond its history limits
       and, with concurrencyPolicy Replace, the active one. */}}
- apiGroups: ["llmops.io"]
  resources: ["trainingjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["llmops.io"]
  resources: ["trainingjobs/status", "modeldeployments/status", "retrainpolicies/status", "modelretirements/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "podmonitors", "prometheusrules"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end -}}

{{/* Cluster-scoped objects: kopf's CRD scanning (which resources exist), its namespace scanning when
     it watches listed namespaces only (to notice one created after it started; watching every
     namespace it needs none), and the webhook configuration. */}}
{{- define "llmops.clusterRules" -}}
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.webhook.enabled }}
{{- /* kopf creates the configuration if absent (create cannot be limited by name), then patches it;
       the operator deletes it on shutdown so nothing is refused while no webhook answers. */}}
{{- /* Both kinds under one name: the validating checks and the mutating `llmops.io/requested-by` stamp. */}}
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
  verbs: ["create"]
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
  resourceNames: [{{ include "llmops.webhookConfigurationName" . | quote }}]
  verbs: ["get", "patch", "delete"]
{{- end }}
{{- end -}}

{{/*
A map as "k=v,k=v" (keys sorted): the form of the operator's LLMOPS_* label settings.
*/}}
{{- define "llmops.pairs" -}}
{{- $out := list -}}
{{- range $k, $v := . }}{{ $out = append $out (printf "%s=%s" $k $v) }}{{ end -}}
{{- join "," $out -}}
{{- end -}}
