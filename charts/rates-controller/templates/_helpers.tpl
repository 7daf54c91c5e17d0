{{/*
The chart name, limited to 63 characters (a DNS label).
*/}}
{{- define "rates-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name, plus the chart name unless the release name already
contains it; so `helm install rates-controller` gives "rates-controller".
*/}}
{{- define "rates-controller.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rates-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of one component, from (dict "ctx" $ "component" "...").
*/}}
{{- define "rates-controller.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rates-controller.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of the controller pod. The component is part of them so that the
Service never selects the `helm test` pod, which shares name and instance.
*/}}
{{- define "rates-controller.selectorLabels" -}}
{{ include "rates-controller.componentSelectorLabels" (dict "ctx" . "component" "controller") }}
{{- end }}

{{/*
Labels every object of the release has, whatever its component.
*/}}
{{- define "rates-controller.metaLabels" -}}
helm.sh/chart: {{ include "rates-controller.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: rates-platform
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
All labels of one component's objects, from (dict "ctx" $ "component" "...").
*/}}
{{- define "rates-controller.componentLabels" -}}
{{ include "rates-controller.componentSelectorLabels" . }}
{{ include "rates-controller.metaLabels" .ctx }}
{{- end }}

{{/*
Labels of the controller's own objects.
*/}}
{{- define "rates-controller.labels" -}}
{{ include "rates-controller.componentLabels" (dict "ctx" . "component" "controller") }}
{{- end }}

{{/*
The labels the controller puts on every ingest Job and its pods (LABELS in
controller/rates_controller/jobs.py). They carry no release: the controller makes them,
not Helm.
*/}}
{{- define "rates-controller.ingestJobLabels" -}}
app.kubernetes.io/name: rates-ingest
app.kubernetes.io/component: ingest
app.kubernetes.io/managed-by: rates-controller
{{- end }}

{{/*
Egress to DNS, to any resolver: the cluster's DNS Service, or a node-local cache on a
link-local address that no pod selector could name.
*/}}
{{- define "rates-controller.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/*
A ServiceAccount's annotations block, from its values (annotations, roleArn): the
roleArn becomes the IRSA annotation. Empty when there is nothing to annotate.
*/}}
{{- define "rates-controller.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy .annotations }}
{{- with .roleArn }}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" . }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "rates-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rates-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rates-controller.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "rates-controller.jobImage" -}}
{{- printf "%s:%s" .Values.jobs.image.repository (default .Chart.AppVersion .Values.jobs.image.tag) }}
{{- end }}

{{/*
JOB_ENV: the Jobs' extra environment. The bucket and the queues are in one region (S3
only notifies a queue in its own region), so the Jobs get aws.region unless jobs.env
names another; as AWS_DEFAULT_REGION too, the only one boto3 reads.
*/}}
{{- define "rates-controller.jobEnv" -}}
{{- /* Here, not in the schema: helm's schema errors for a property's name point at
another value altogether. */}}
{{- range $name := keys .Values.jobs.env | sortAlpha }}
{{- if has $name (list "S3_BUCKET" "S3_OBJECT_KEY" "S3_VERSION_ID" "S3_UPLOADED_BY" "DATABASE_URL" "DATABASE_IAM_AUTH") }}
{{- fail (printf "jobs.env may not set %s: the controller sets it for each Job (the uploaded object's S3_*, and DATABASE_* from database.*)" $name) }}
{{- end }}
{{- if not (regexMatch "^[-._a-zA-Z][-._a-zA-Z0-9]*$" $name) }}
{{- fail (printf "jobs.env: %q is not a name Kubernetes takes for an environment variable (letters, digits, '_', '-' and '.', not a digit first)" $name) }}
{{- end }}
{{- end }}
{{- $region := dict "AWS_REGION" .Values.aws.region "AWS_DEFAULT_REGION" .Values.aws.region }}
{{- $env := merge (deepCopy .Values.jobs.env) $region }}
{{- toJson $env }}
{{- end }}

{{/*
Where the Jobs' pods may run (JOB_SCHEDULING): the pod spec fields that are set, as JSON.
*/}}
{{- define "rates-controller.jobScheduling" -}}
{{- $scheduling := dict }}
{{- range $field := list "nodeSelector" "tolerations" "affinity" "priorityClassName" "topologySpreadConstraints" }}
{{- with index $.Values.jobs $field }}
{{- $_ := set $scheduling $field . }}
{{- end }}
{{- end }}
{{- toJson $scheduling }}
{{- end }}

{{/*
Pod and container security settings, shared by the controller and the test pod. The
image's user is 10001 and nothing is written to its filesystem.
*/}}
{{- define "rates-controller.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "rates-controller.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Checks that span several values, which values.schema.json cannot express.
*/}}
{{- define "rates-controller.validate" -}}
{{- with .Values.terraformEnvironment }}
{{- if ne . $.Release.Namespace }}
{{- fail (printf "terraformEnvironment is %q (these values are Terraform's outputs for %s) but the release is in namespace %q: the IAM roles in them trust %s's ServiceAccounts only, so the pods could not assume them. Install into namespace %s, or use %s's own outputs (terraform output -json controller_values, in its state)" . . $.Release.Namespace . . $.Release.Namespace) }}
{{- end }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.controller.pollWaitSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed controller.pollWaitSeconds (%d): the controller finishes its long poll before it exits" (int .Values.terminationGracePeriodSeconds) (int .Values.controller.pollWaitSeconds)) }}
{{- end }}
{{- if eq (include "rates-controller.serviceAccountName" .) .Values.jobs.serviceAccount.name }}
{{- fail "jobs.serviceAccount.name must differ from the controller's ServiceAccount: the Jobs would get its IAM role" }}
{{- end }}
{{- end }}

{{/*
Milliseconds in a Prometheus duration of the kind the schema takes ("1m30s": ms, s, m, h).
*/}}
{{- define "rates-controller.durationMs" -}}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" . -1 }}
{{- $unit := regexFind "[a-z]+$" . }}
{{- $ms = add $ms (mul (trimSuffix $unit . | int64) (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit)) }}
{{- end }}
{{- $ms }}
{{- end }}
