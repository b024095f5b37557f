{{/* Chart name, truncated to what a label value and a DNS name allow. */}}
{{- define "ipfs-image.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name. Kept short enough that "<fullname>-operator-kubo-init" and similar
names fit in 63 characters.
*/}}
{{- define "ipfs-image.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value. */}}
{{- define "ipfs-image.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ipfs-image.labels" -}}
helm.sh/chart: {{ include "ipfs-image.chart" . }}
app.kubernetes.io/name: {{ include "ipfs-image.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ipfs-image-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "ipfs-image.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ipfs-image.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects. */}}
{{- define "ipfs-image.componentLabels" -}}
{{ include "ipfs-image.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount names. */}}
{{- define "ipfs-image.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "ipfs-image.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ipfs-image.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (printf "%s-agent" (include "ipfs-image.fullname" .)) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image references: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "ipfs-image.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "ipfs-image.agentImage" -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) }}
{{- end }}

{{- define "ipfs-image.kuboImage" -}}
{{- printf "%s:%s" .Values.kubo.image.repository .Values.kubo.image.tag }}
{{- end }}

{{/* Name of the Secret holding swarm.key. */}}
{{- define "ipfs-image.swarmKeySecretName" -}}
{{- if .Values.swarmKey.existingSecret }}
{{- .Values.swarmKey.existingSecret }}
{{- else }}
{{- printf "%s-swarm-key" (include "ipfs-image.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Kubo libp2p listen addresses for a swarm port. A private network (swarm.key) runs over TCP
only: libp2p's pre-shared-key protection does not cover QUIC, WebTransport or WebRTC, and Kubo
refuses to start when one of those is enabled together with a swarm key.
*/}}
{{- define "ipfs-image.kuboSwarmAddresses" -}}
{{- $port := int .port }}
{{- $addrs := list (printf "/ip4/0.0.0.0/tcp/%d" $port) (printf "/ip6/::/tcp/%d" $port) }}
{{- if not .ctx.Values.swarmKey.enabled }}
{{- $addrs = concat $addrs (list (printf "/ip4/0.0.0.0/udp/%d/quic-v1" $port) (printf "/ip6/::/udp/%d/quic-v1" $port)) }}
{{- end }}
{{- toJson $addrs }}
{{- end }}

{{/*
The Kubo containers of a pod: include with
(dict "ctx" $ "component" "operator"|"agent" "kubo" <component kubo values>).
Renders the init container that configures the repo and the daemon container.
Both run as Kubo's image user (uid 1000, gid 100 "users").
*/}}
{{- define "ipfs-image.kuboInitContainer" -}}
- name: kubo-init
  image: {{ include "ipfs-image.kuboImage" .ctx }}
  imagePullPolicy: {{ .ctx.Values.kubo.image.pullPolicy }}
  command: ["/bin/sh", "/kubo-init/configure-kubo.sh"]
  env:
    - name: IPFS_PATH
      value: /data/ipfs
    - name: IPFS_TELEMETRY
      value: "off"
    - name: KUBO_SWARM_ADDRESSES
      value: {{ include "ipfs-image.kuboSwarmAddresses" (dict "ctx" .ctx "port" .kubo.swarmPort) | quote }}
    - name: KUBO_STORAGE_MAX
      value: {{ .kubo.storageMax | quote }}
    - name: KUBO_ROUTING_TYPE
      value: {{ .ctx.Values.kubo.routingType | quote }}
    - name: KUBO_BOOTSTRAP
      value: {{ toJson .ctx.Values.kubo.bootstrap | quote }}
    - name: KUBO_PRIVATE_NETWORK
      value: {{ .ctx.Values.swarmKey.enabled | quote }}
    {{- with .kubo.gatewayPort }}
    # The HTTP gateway on the node's loopback only: the agent reads blobs there.
    - name: KUBO_GATEWAY_PORT
      value: {{ . | quote }}
    {{- end }}
  securityContext:
    {{- include "ipfs-image.kuboSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: kubo-repo
      mountPath: /data/ipfs
    - name: kubo-init
      mountPath: /kubo-init
      readOnly: true
    {{- if .ctx.Values.swarmKey.enabled }}
    - name: swarm-key
      mountPath: /swarm-key
      readOnly: true
    {{- end }}
    - name: kubo-tmp
      mountPath: /tmp
{{- end }}

{{- define "ipfs-image.kuboContainer" -}}
- name: kubo
  image: {{ include "ipfs-image.kuboImage" .ctx }}
  imagePullPolicy: {{ .ctx.Values.kubo.image.pullPolicy }}
  # Not the image's start_ipfs entrypoint: it would rewrite Addresses.API to 0.0.0.0 on a
  # fresh repo. kubo-init has configured the repo already.
  command: ["ipfs", "daemon", "--migrate=true", "--enable-gc", "--agent-version-suffix=ipfs-image"]
  env:
    - name: IPFS_PATH
      value: /data/ipfs
    - name: IPFS_TELEMETRY
      value: "off"
    {{- with .ctx.Values.kubo.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    # libp2p swarm. The RPC API (5001) is deliberately not listed: it listens on 127.0.0.1
    # only and must never become a hostPort or a Service.
    - name: swarm
      containerPort: {{ .kubo.swarmPort }}
      protocol: TCP
    {{- if not .ctx.Values.swarmKey.enabled }}
    - name: swarm-quic
      containerPort: {{ .kubo.swarmPort }}
      protocol: UDP
    {{- end }}
  startupProbe:
    exec:
      command: ["ipfs", "--api=/ip4/127.0.0.1/tcp/5001", "diag", "healthy"]
    periodSeconds: 5
    timeoutSeconds: 5
    # Repo migrations after an upgrade can take a while.
    failureThreshold: 120
  livenessProbe:
    exec:
      command: ["ipfs", "--api=/ip4/127.0.0.1/tcp/5001", "diag", "healthy"]
    periodSeconds: 30
    timeoutSeconds: 10
    failureThreshold: 5
  resources:
    {{- toYaml .kubo.resources | nindent 4 }}
  securityContext:
    {{- include "ipfs-image.kuboSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: kubo-repo
      mountPath: /data/ipfs
    - name: kubo-tmp
      mountPath: /tmp
{{- end }}

{{- define "ipfs-image.kuboSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Volumes the Kubo containers need besides the repo. */}}
{{- define "ipfs-image.kuboVolumes" -}}
- name: kubo-init
  configMap:
    name: {{ include "ipfs-image.fullname" . }}-kubo-init
    defaultMode: 0555
- name: kubo-tmp
  emptyDir: {}
{{- if .Values.swarmKey.enabled }}
- name: swarm-key
  secret:
    secretName: {{ include "ipfs-image.swarmKeySecretName" . }}
    defaultMode: 0444
    items:
      - key: swarm.key
        path: swarm.key
{{- end }}
{{- end }}

{{/* Checksums that roll the pods when the Kubo configuration changes. */}}
{{- define "ipfs-image.kuboChecksums" -}}
checksum/kubo-init: {{ include (print .Template.BasePath "/kubo-configmap.yaml") . | sha256sum }}
{{- /* Only a key given in values can change in place; a generated one is looked up and kept
       (and would render differently on every include). */}}
{{- if and .Values.swarmKey.enabled (not .Values.swarmKey.existingSecret) .Values.swarmKey.key }}
checksum/swarm-key: {{ include (print .Template.BasePath "/swarm-key-secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The agent's containers run as root only because they write containerd's config directory
(root-owned, on the host). Every capability is dropped: root still owns those files.
*/}}
{{- define "ipfs-image.agentSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
The agent's containerd mounts: the hosts.toml directory (read-write) and, when the chart checks
it, the directory of containerd's own config (read-only, at the same path, so that absolute
`imports` resolve).
*/}}
{{- define "ipfs-image.containerdMounts" -}}
{{- with .Values.containerd.configFile -}}
- name: containerd-config
  mountPath: {{ dir . }}
  readOnly: true
{{ end -}}
- name: containerd-certs
  mountPath: {{ .Values.containerd.configPath }}
{{- end }}
