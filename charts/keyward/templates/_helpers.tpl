{{/* The chart name, or nameOverride. */}}
{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, else the release name, plus the chart
name unless the release name contains it. Cluster-scoped objects (ClusterRoles and their
bindings) carry it too, so two releases never share one.
*/}}
{{- define "keyward.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* <fullname>-controller, -verifier and -webhook (54 + 11 characters at most: a DNS label). */}}
{{- define "keyward.controller.fullname" -}}
{{- printf "%s-controller" (include "keyward.fullname" .) }}
{{- end }}

{{- define "keyward.verifier.fullname" -}}
{{- printf "%s-verifier" (include "keyward.fullname" .) }}
{{- end }}

{{- define "keyward.webhook.fullname" -}}
{{- printf "%s-webhook" (include "keyward.fullname" .) }}
{{- end }}

{{- define "keyward.webhook.serviceAccountName" -}}
{{- default (include "keyward.webhook.fullname" .) .Values.webhook.serviceAccount.name }}
{{- end }}

{{- define "keyward.controller.serviceAccountName" -}}
{{- default (include "keyward.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- end }}

{{- define "keyward.verifier.serviceAccountName" -}}
{{- default (include "keyward.verifier.fullname" .) .Values.verifier.serviceAccount.name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "keyward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keyward
{{- end }}

{{/* Selector labels of one component (controller or verifier): never change after install. */}}
{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "keyward.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod Security "restricted": the pod's part. */}}
{{- define "keyward.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security "restricted": the container's part. */}}
{{- define "keyward.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The rules of the controller's role (ClusterRole, or Role per watched namespace). */}}
{{- define "keyward.controller.rules" -}}
- apiGroups: ["keyward.io"]
  resources: ["apikeys", "credentials"]
  verbs: ["get", "list", "watch"]
# Status by server-side apply. Only the controller may write status: the verifier trusts
# status.tokenHash, so whoever can write it can mint keys.
- apiGroups: ["keyward.io"]
  resources: ["apikeys/status", "credentials/status"]
  verbs: ["patch"]
# The Secrets' ownerReference sets blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only to whoever may
# update the owner's finalizers.
- apiGroups: ["keyward.io"]
  resources: ["apikeys/finalizers", "credentials/finalizers"]
  verbs: ["update"]
# The token Secrets: a metadata-only watch, a fresh GET before every decision, a LIST per
# Credential, create-only issue, replace on re-issue, label and annotation patches, delete on
# expiry. A role cannot be narrowed to a label, so it covers every Secret in its namespaces.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The rules of the verifier's role: read the keys, never a Secret. */}}
{{- define "keyward.verifier.rules" -}}
- apiGroups: ["keyward.io"]
  resources: ["apikeys", "credentials"]
  verbs: ["get", "list", "watch"]
{{- if .Values.verifier.usage.enabled }}
# The usage recorder: one KeyUsage per key, created, then its status merged into (never
# deleted: garbage collection removes it with its key).
- apiGroups: ["keyward.io"]
  resources: ["keyusages", "keyusages/status"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- end }}

{{/*
The signing Secret of token exchange: the controller's value controller.signing.secret when
there is one, else the default name.
*/}}
{{- define "keyward.signingSecret" -}}
{{- dig "signing" "secret" "keyward-signing-keys" .Values.controller -}}
{{- end }}
