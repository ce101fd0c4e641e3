{{/*
Names, labels and the decisions several templates share. The checks that refuse a values
combination live in `shop-controller.validate`, which deployment.yaml includes first.
*/}}

{{- define "shop-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name alone when it already contains the chart's. */}}
{{- define "shop-controller.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "shop-controller.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shop-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shop-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shop-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "shop-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: shop-controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shop-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shop-controller.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shop-controller.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* `sqlite` or `postgres`: from database.engine with an existing Secret, else from the URL. */}}
{{- define "shop-controller.databaseEngine" -}}
{{- $db := .Values.database -}}
{{- $fromUrl := "" -}}
{{- if hasPrefix "sqlite:" $db.url -}}
{{- $fromUrl = "sqlite" -}}
{{- else if or (hasPrefix "postgres://" $db.url) (hasPrefix "postgresql://" $db.url) -}}
{{- $fromUrl = "postgres" -}}
{{- end -}}
{{- if $db.existingSecret -}}
{{- required "database.engine (sqlite or postgres) is required with database.existingSecret: the chart cannot read the URL inside it" $db.engine -}}
{{- else if not $fromUrl -}}
{{- fail "database.url must start with sqlite: or postgres:// (or set database.existingSecret)" -}}
{{- else if and $db.engine (ne $db.engine $fromUrl) -}}
{{- fail (printf "database.engine is %s but database.url names %s" $db.engine $fromUrl) -}}
{{- else -}}
{{- $fromUrl -}}
{{- end -}}
{{- end -}}

{{/*
"true" when only one process may run at a time: SQLite has one writer and no cross-process
notifications or leases. Such a release keeps one replica and replaces its pod with Recreate,
never two at once. On PostgreSQL any number of pods may run, the reconcile loops included:
each shop is claimed by one replica through a lease in the database.
*/}}
{{- define "shop-controller.singleWriter" -}}
{{- if eq (include "shop-controller.databaseEngine" .) "sqlite" -}}
true
{{- end -}}
{{- end -}}

{{- define "shop-controller.secretName" -}}
{{- include "shop-controller.fullname" . -}}
{{- end -}}

{{/* Where each secret value comes from: the chart's Secret or the one named in values. */}}
{{- define "shop-controller.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (include "shop-controller.secretName" .) -}}
{{- end -}}

{{- define "shop-controller.databaseSecretKey" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}database-url{{- end -}}
{{- end -}}

{{- define "shop-controller.tokensSecretName" -}}
{{- .Values.auth.existingSecret | default (include "shop-controller.secretName" .) -}}
{{- end -}}

{{- define "shop-controller.tokensSecretKey" -}}
{{- if .Values.auth.existingSecret -}}{{ .Values.auth.existingSecretKey }}{{- else -}}tokens{{- end -}}
{{- end -}}

{{- define "shop-controller.acmeKeyEnabled" -}}
{{- if or .Values.acme.encryptionKey .Values.acme.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "shop-controller.acmeSecretName" -}}
{{- .Values.acme.existingSecret | default (include "shop-controller.secretName" .) -}}
{{- end -}}

{{- define "shop-controller.acmeSecretKey" -}}
{{- if .Values.acme.existingSecret -}}{{ .Values.acme.existingSecretKey }}{{- else -}}acme-encryption-key{{- end -}}
{{- end -}}

{{/* Files the controller reads, mounted from Secrets. */}}
{{- define "shop-controller.tokensFile" -}}/etc/shop-controller/tokens/tokens{{- end -}}
{{- define "shop-controller.tlsDir" -}}/etc/shop-controller/tls{{- end -}}
{{- define "shop-controller.acmeKeyFile" -}}/etc/shop-controller/acme/encryption-key{{- end -}}

{{/*
Values combinations the controller cannot run with. values.schema.json refuses most of them
too; these messages also hold when schema validation is skipped.
*/}}
{{- define "shop-controller.validate" -}}
{{- $engine := include "shop-controller.databaseEngine" . -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if and (eq $engine "sqlite") (gt $replicas 1) -}}
{{- fail (printf "replicaCount is %d but the database is SQLite: SQLite has one writer and no cross-process notifications or leases, so run one replica (replicaCount: 1) or use PostgreSQL" $replicas) -}}
{{- end -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- if and $pdb.enabled (gt $replicas 1) -}}
{{- /* Kubernetes rounds a percentage of maxUnavailable up. */ -}}
{{- $evictable := 0 -}}
{{- if kindIs "string" $pdb.maxUnavailable -}}
{{- $evictable = div (add (mul (int (trimSuffix "%" $pdb.maxUnavailable)) $replicas) 99) 100 -}}
{{- else -}}
{{- $evictable = int $pdb.maxUnavailable -}}
{{- end -}}
{{- if ge (int $evictable) $replicas -}}
{{- fail (printf "podDisruptionBudget.maxUnavailable %v lets a drain evict all %d replicas at once; keep at least one available (maxUnavailable: 1)" $pdb.maxUnavailable $replicas) -}}
{{- end -}}
{{- end -}}
{{- /* After their 30 s the loops hand their leases back, in the margin left above the sum; a
pod killed before that leaves its shops to the other replicas only when reconcile.leaseTtl
runs out. */ -}}
{{- $loopsGrace := 0 -}}
{{- if .Values.reconcile.enabled -}}{{- $loopsGrace = 30 -}}{{- end -}}
{{- $stop := add (int .Values.preStopSleepSeconds) (max (int .Values.shutdownGraceSeconds) $loopsGrace) -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $stop) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds plus the longer of shutdownGraceSeconds and the reconcile loops' 30s grace (%d), or Kubernetes kills the controller mid-shutdown" (int .Values.terminationGracePeriodSeconds) (int $stop)) -}}
{{- end -}}
{{- if and (lt (int .Values.nginx.listenPort) 1024) (eq .Values.nginx.privilegedPort "none") -}}
{{- fail (printf "nginx.listenPort %d is below 1024 and nginx.privilegedPort is none: nginx -t in the non-root pod could not bind it; use sysctl or capability" (int .Values.nginx.listenPort)) -}}
{{- end -}}
{{- if and (eq .Values.auth.mode "none") (or .Values.auth.tokens .Values.auth.existingSecret) -}}
{{- fail "auth.mode is none but tokens are configured: the controller would ignore them; set auth.mode: tokens" -}}
{{- end -}}
{{- $sqlitePath := .Values.database.url | trimPrefix "sqlite:" | trimPrefix "//" -}}
{{- if and (eq $engine "sqlite") (not .Values.database.existingSecret) (not (hasPrefix (printf "%s/" (trimSuffix "/" .Values.database.sqlite.mountPath)) $sqlitePath)) -}}
{{- fail (printf "database.url %s is not under database.sqlite.mountPath %s: the root file system is read-only" .Values.database.url .Values.database.sqlite.mountPath) -}}
{{- end -}}
{{- end -}}

{{/*
A probe of the gRPC port: native grpc.health.v1 checks, or a TCP connect when the server
speaks TLS (Kubernetes' gRPC probes cannot). Takes a dict of tls, port and service.
*/}}
{{- define "shop-controller.probe" -}}
{{- if .tls -}}
tcpSocket:
  port: {{ .port }}
{{- else -}}
grpc:
  port: {{ .port }}
  {{- with .service }}
  service: {{ . | quote }}
  {{- end }}
{{- end -}}
{{- end -}}
