{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "rates-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources. A release named rates-api (one per namespace) is
not repeated as rates-api-rates-api.
*/}}
{{- define "rates-api.fullname" -}}
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

{{- define "rates-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The version the pods run: the image tag, else the chart's appVersion.
*/}}
{{- define "rates-api.version" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "rates-api.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "rates-api.version" .) }}
{{- end }}
{{- end }}

{{/*
Standard labels of one component; call with (dict "ctx" $ "component" "api").
*/}}
{{- define "rates-api.componentLabels" -}}
helm.sh/chart: {{ include "rates-api.chart" .ctx }}
{{ include "rates-api.componentSelectorLabels" . }}
{{- /* A label value ends in a letter or digit: a tag cut at 63 may not (a tag may have 128). */}}
app.kubernetes.io/version: {{ regexReplaceAll "[^A-Za-z0-9]+$" (include "rates-api.version" .ctx | trunc 63) "" | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: rates-platform
{{- end }}

{{/*
Labels of the API's own resources.
*/}}
{{- define "rates-api.labels" -}}
{{ include "rates-api.componentLabels" (dict "ctx" . "component" "api") }}
{{- end }}

{{/*
The labels that pick one component's pods, nothing that changes between releases; call
with (dict "ctx" $ "component" "migrations").
*/}}
{{- define "rates-api.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "rates-api.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels: immutable on a Deployment, so nothing that changes between releases.
The component keeps the migration and test pods out of the Service.
*/}}
{{- define "rates-api.selectorLabels" -}}
{{ include "rates-api.componentSelectorLabels" (dict "ctx" . "component" "api") }}
{{- end }}

{{/*
The migration hook Job's name (room left for the suffix within 63 characters).
*/}}
{{- define "rates-api.migrationJobName" -}}
{{- include "rates-api.fullname" . | trunc 55 | trimSuffix "-" }}-migrate
{{- end }}

{{/*
The egress rules the API and the migration pods share (templates/networkpolicy.yaml):
DNS, PostgreSQL, then networkPolicy.extraEgress as given.
*/}}
{{- define "rates-api.networkPolicyEgress" -}}
{{- $np := .Values.networkPolicy -}}
# DNS to any resolver: the cluster's DNS Service, or a node-local cache on a link-local
# address that no pod selector could name.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# PostgreSQL: to networkPolicy.database.cidrs when given, else to any address.
- ports:
    - port: {{ $np.database.port | int }}
      protocol: TCP
  {{- with $np.database.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . | quote }}
    {{- end }}
  {{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rates-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rates-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The most pods the release can run: the PDB only makes sense above one.
*/}}
{{- define "rates-api.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.maxReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Seconds from SIGTERM until gunicorn has stopped: gunicorn.conf.py sets its
graceful_timeout to ceil(SHUTDOWN_DRAIN_SECONDS) + GUNICORN_GRACEFUL_TIMEOUT.
*/}}
{{- define "rates-api.gunicornStopSeconds" -}}
{{- add (ceil .Values.shutdown.drainSeconds | int) (.Values.shutdown.gracefulTimeoutSeconds | int) }}
{{- end }}

{{/*
Cross-field rules the schema cannot express. Each one protects a request from being
dropped; rendering stops with the reason rather than shipping a chart that loses some.
*/}}
{{- define "rates-api.validate" -}}
{{- with .Values.terraformEnvironment }}
{{- if ne . $.Release.Namespace }}
{{- fail (printf "terraformEnvironment is %q (these values are Terraform's outputs for %s) but the release is in namespace %q: the IAM roles in them trust %s's ServiceAccounts only, so the pods could not assume them. Install into namespace %s, or use %s's own outputs (terraform output -json api_values, in its state)" . . $.Release.Namespace . . $.Release.Namespace) }}
{{- end }}
{{- end }}
{{- $s := .Values.shutdown }}
{{- $serving := add ($s.preStopSleepSeconds | int) (include "rates-api.gunicornStopSeconds" . | int) }}
{{- if le ($s.terminationGracePeriodSeconds | int) $serving }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + ceil(drainSeconds) + gracefulTimeoutSeconds (%d), or the kubelet kills gunicorn while requests are in flight" ($s.terminationGracePeriodSeconds | int) $serving) }}
{{- end }}
{{- /* A request held to its limits: a connection opened, then a statement answered just
       before the API would give up on it (its timeout plus 2 s of silence, rates_core.db). */}}
{{- $request := add (.Values.config.dbConnectTimeoutSeconds | int) (ceil (addf (divf .Values.config.dbStatementTimeoutMs 1000) 2) | int) }}
{{- $requestWhat := printf "config.dbConnectTimeoutSeconds + ceil(config.dbStatementTimeoutMs / 1000 + 2) (%d s, a request held to its timeouts)" $request }}
{{- if ge $request ($s.gracefulTimeoutSeconds | int) }}
{{- fail (printf "%s must be below shutdown.gracefulTimeoutSeconds (%d), or gunicorn stops workers with such a request in flight" $requestWhat ($s.gracefulTimeoutSeconds | int)) }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- if ge (.Values.ingress.deregistrationDelaySeconds | int) $serving }}
{{- fail (printf "ingress.deregistrationDelaySeconds (%d) must be below preStopSleepSeconds + ceil(drainSeconds) + gracefulTimeoutSeconds (%d), so the ALB is done with a pod before it stops serving" (.Values.ingress.deregistrationDelaySeconds | int) $serving) }}
{{- end }}
{{- if ge $request (.Values.ingress.deregistrationDelaySeconds | int) }}
{{- fail (printf "%s must be below ingress.deregistrationDelaySeconds (%d), or the ALB cuts such a request off a pod being replaced" $requestWhat (.Values.ingress.deregistrationDelaySeconds | int)) }}
{{- end }}
{{- if ge $request (.Values.ingress.idleTimeoutSeconds | int) }}
{{- fail (printf "%s must be below ingress.idleTimeoutSeconds (%d), or the ALB answers 504 to such a request" $requestWhat (.Values.ingress.idleTimeoutSeconds | int)) }}
{{- end }}
{{- if le (.Values.config.gunicornKeepalive | int) (.Values.ingress.idleTimeoutSeconds | int) }}
{{- fail (printf "config.gunicornKeepalive (%d) must exceed ingress.idleTimeoutSeconds (%d), so the ALB closes idle connections first and never sends a request into one gunicorn is closing" (.Values.config.gunicornKeepalive | int) (.Values.ingress.idleTimeoutSeconds | int)) }}
{{- end }}
{{- end }}
{{- if eq (.Values.probePort | int) (.Values.containerPort | int) }}
{{- fail "probePort must differ from containerPort: gunicorn listens on one, the workers' probe threads on the other" }}
{{- end }}
{{- with dig "limits" "memory" "" .Values.resources }}
{{- $limit := include "rates-api.mebibytes" . | float64 }}
{{- /* RESPONSE_CACHE_SIZE 0 turns the cache off, whatever its MiB budget says */}}
{{- $cacheMiB := ternary 0 $.Values.config.responseCacheMiB (eq ($.Values.config.responseCacheSize | int) 0) }}
{{- $held := addf (mulf ($.Values.config.webConcurrency | float64) ($cacheMiB | float64)) (include "rates-api.mebibytes" $.Values.shmSizeLimit | float64) }}
{{- if gt $held (divf $limit 2) }}
{{- fail (printf "config.webConcurrency x config.responseCacheMiB + shmSizeLimit (%.1f MiB) must be at most half of resources.limits.memory (%.1f MiB): the workers themselves (idle, about 45 MiB each, 70 with database.iamAuth, and the master 32) need the rest, or full caches get the pod OOM-killed" $held $limit) }}
{{- end }}
{{- /* And the workers themselves, measured idle: many workers with small caches pass the half above */}}
{{- $worker := ternary 70.0 45.0 (eq (toString $.Values.database.iamAuth) "true") }}
{{- $whole := addf (mulf ($.Values.config.webConcurrency | float64) (addf ($cacheMiB | float64) $worker)) 32.0 (include "rates-api.mebibytes" $.Values.shmSizeLimit | float64) }}
{{- if gt $whole $limit }}
{{- fail (printf "config.webConcurrency x (config.responseCacheMiB + a worker's own %.0f MiB) + the master's 32 MiB + shmSizeLimit (%.1f MiB) must fit resources.limits.memory (%.1f MiB), or the pod is OOM-killed once its caches fill" $worker $whole $limit) }}
{{- end }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if not (dig "requests" "cpu" "" .Values.resources) }}
{{- fail "autoscaling on CPU utilization needs resources.requests.cpu" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
MiB in a Kubernetes memory quantity ("384Mi", "1Gi", "500M", "129e6", ".5Gi", or a number
of bytes, which a values file may give unquoted: YAML makes it a float).
*/}}
{{- define "rates-api.mebibytes" -}}
{{- $q := kindIs "string" . | ternary . (printf "%.0f" (float64 .)) | trim }}
{{- $number := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?" $q }}
{{- $unit := trimPrefix $number $q }}
{{- $bytes := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- if or (not $number) (not (hasKey $bytes $unit)) }}
{{- fail (printf "%q is not a memory quantity this chart reads (a number, then m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)" $q) }}
{{- end }}
{{- divf (mulf ($number | float64) (get $bytes $unit)) 1048576.0 }}
{{- end }}

{{/*
Milliseconds in a Prometheus duration of the kind the schema takes ("1m30s": ms, s, m, h).
*/}}
{{- define "rates-api.durationMs" -}}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" . -1 }}
{{- $unit := regexFind "[a-z]+$" . }}
{{- $ms = add $ms (mul (trimSuffix $unit . | int64) (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit)) }}
{{- end }}
{{- $ms }}
{{- end }}

{{- /* A budget that allows no eviction at the fewest pods (minAvailable of them all, or a
share that Kubernetes rounds up to all) holds every node drain, and an EKS node group
update fails after 15 minutes; the schema refuses maxUnavailable 0 for the same reason. */}}
{{- define "rates-api.pdbLeavesAnEviction" -}}
{{- $min := toString .Values.podDisruptionBudget.minAvailable }}
{{- $fewest := .Values.replicaCount | int }}
{{- if .Values.autoscaling.enabled }}{{ $fewest = .Values.autoscaling.minReplicas | int }}{{ end }}
{{- $need := atoi $min }}
{{- if hasSuffix "%" $min }}
{{- $need = div (add (mul (trimSuffix "%" $min | atoi) $fewest) 99) 100 }}
{{- end }}
{{- if ge $need $fewest }}
{{- fail (printf "podDisruptionBudget.minAvailable: %s of %d pods (the fewest) keeps %d up, which leaves none to evict, so a node drain (and an EKS node group update) waits for ever; use fewer, or maxUnavailable" $min $fewest $need) }}
{{- end }}
{{- end }}

{{- /* The port the ALB health-checks /readyz on: probePort, or "traffic-port" (the http
port, where every image of the API answers /readyz too) while any pod that may serve does
not listen on it. Upgrading from rates-api 0.14.x or earlier, or changing probePort, the
running pods do not listen there yet: moved at once, the target group's check would fail
every old pod during the rollout, and only the surge's new pods would get traffic. So the
probe port needs the live Deployment's template to have it, and every ReplicaSet the
Deployment owns that still has pods, or is meant to, too: an upgrade from 0.14.x that
timed out under --wait leaves the template with the port while the old ReplicaSet's pods
(without it) still serve. Such a ReplicaSet counts by status.replicas (the pods there are:
an old one's spec drops to 0 before its pods have gone) or spec.replicas (the pods it is
about to make: a rollback scales an old one up). This upgrade keeps the check on the http
port; the next one, once the rollout is done, moves it. lookup sees the cluster on install
and upgrade only: helm template and GitOps tools that render without it get probePort. */}}
{{- define "rates-api.albHealthcheckPort" -}}
{{- $port := .Values.probePort | int | toString }}
{{- $live := lookup "apps/v1" "Deployment" .Release.Namespace (include "rates-api.fullname" .) }}
{{- if $live }}
{{- $listening := include "rates-api.listensOnProbePort" (dict "template" (dig "spec" "template" dict $live) "port" $port) }}
{{- $uid := dig "metadata" "uid" "" $live }}
{{- range (lookup "apps/v1" "ReplicaSet" .Release.Namespace "").items | default (list) }}
{{- $owned := false }}
{{- range (dig "metadata" "ownerReferences" (list) .) }}
{{- if and (eq (.kind | default "") "Deployment") (eq (.uid | default "") $uid) }}
{{- $owned = true }}
{{- end }}
{{- end }}
{{- $pods := max (dig "status" "replicas" 0 . | int) (dig "spec" "replicas" 0 . | int) }}
{{- if and $owned (gt $pods 0) (not (include "rates-api.listensOnProbePort" (dict "template" (dig "spec" "template" dict .) "port" $port))) }}
{{- $listening = "" }}
{{- end }}
{{- end }}
{{- if not $listening }}
{{- $port = "traffic-port" }}
{{- end }}
{{- end }}
{{- $port }}
{{- end }}

{{- /* "true" when a pod template's api container has a port named probe of the number
given (a string), else empty. */}}
{{- define "rates-api.listensOnProbePort" -}}
{{- $port := .port }}
{{- $found := false }}
{{- range (dig "spec" "containers" (list) .template) }}
{{- if eq (.name | default "") "api" }}
{{- range (.ports | default (list)) }}
{{- if and (eq (.name | default "") "probe") (eq (.containerPort | int | toString) $port) }}
{{- $found = true }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}
