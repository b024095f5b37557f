#!/usr/bin/env python3
"""Assertions on the rendered Helm chart (called by e2e/chart/test.sh).

Usage: assertions.py LABEL=RENDERED.yaml [LABEL=RENDERED.yaml ...]
       assertions.py --self-test RENDERED.yaml   (each check must catch a planted fault)

Prints one TAP-like line per check, `ok - <name>` or `not ok - <name>` followed by indented
reasons; exits 0 always (test.sh counts the lines).
"""

import re
import sys

import yaml

# --- what the chart must look like -----------------------------------------------------------

KUBO_API_PORT = 5001
AGENT_LISTEN = "127.0.0.1:5050"
LOOPBACK_API = "http://127.0.0.1:5001"

# RBAC: exactly these (apiGroup, resource, verb) triples, nothing more, nothing less: what the
# code calls (the real-API tests show every call is allowed), cluster-wide only where the code
# works across namespaces; the rest is a Role in the release namespace.
def triples(rules):
    return {(g, r, v) for groups, resources, verbs in rules for g in groups for r in resources for v in verbs}

EXPECTED_RBAC = {
    ("operator", "ClusterRole"): triples([
        (["ipfsimage.dev"], ["ipfsimages"], ["list", "watch", "patch"]),
        (["ipfsimage.dev"], ["ipfsimages/status"], ["patch"]),
        ([""], ["secrets"], ["get"]),
        (["events.k8s.io"], ["events"], ["create", "patch"]),
        ([""], ["nodes"], ["list", "watch"]),
    ]),
    ("operator", "Role"): triples([
        ([""], ["pods"], ["patch"]),
        (["coordination.k8s.io"], ["leases"], ["get", "create", "update"]),
    ]),
    ("agent", "ClusterRole"): triples([
        (["ipfsimage.dev"], ["ipfsimages"], ["list", "watch"]),
        (["ipfsimage.dev"], ["ipfsimages/status"], ["patch"]),
        ([""], ["nodes"], ["list", "watch"]),
    ]),
    ("agent", "Role"): triples([
        ([""], ["pods"], ["list", "watch", "patch"]),
    ]),
}

BINDING = {"ClusterRole": "ClusterRoleBinding", "Role": "RoleBinding"}

# The users' roles (userRoles.aggregate): aggregated into the built-in roles by these labels,
# never bound by the chart, and never a status write or anything beyond IpfsImages.
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
EXPECTED_USER_ROLES = {
    "edit": ({"admin", "edit"}, triples([
        (["ipfsimage.dev"], ["ipfsimages"], ["create", "update", "patch", "delete", "deletecollection"]),
    ])),
    "view": ({"admin", "edit", "view"}, triples([
        (["ipfsimage.dev"], ["ipfsimages", "ipfsimages/status"], ["get", "list", "watch"]),
    ])),
}

STANDARD_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
]

# repository[:port]/path:tag where tag is a version (v1.2.3, 1.2, 0.1.0-rc1 ...).
IMAGE_RE = re.compile(r"^(?P<repo>[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)$")
VERSION_TAG_RE = re.compile(r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?([-.+][A-Za-z0-9.]+)*$")


# --- helpers ----------------------------------------------------------------------------------

results = []


def check(name, problems):
    """Record a check: `problems` is a list of strings (empty = pass)."""
    results.append((name, list(problems)))


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_spec(obj):
    kind = obj.get("kind")
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(spec, init=True):
    out = list(spec.get("containers", []))
    if init:
        out += spec.get("initContainers", []) or []
    return out


def component(obj):
    return obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")


def one(objs, kind, comp):
    found = [o for o in objs if o.get("kind") == kind and component(o) == comp]
    return found[0] if len(found) == 1 else None


def arg_value(args, flag):
    """Value of --flag in an argument list (`--flag=V` or `--flag V`)."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def env_value(container, name):
    for e in container.get("env", []) or []:
        if e.get("name") == name:
            return e.get("value", e.get("valueFrom"))
    return None


# --- checks on one render ---------------------------------------------------------------------

def checks_for(label, objs, text):
    workloads = [o for o in objs if pod_spec(o) is not None]
    operator = one(objs, "Deployment", "operator")
    agent_ds = one(objs, "DaemonSet", "agent")
    check(f"[{label}] renders one operator Deployment and one agent DaemonSet",
          [] if operator and agent_ds else ["missing or duplicated operator Deployment / agent DaemonSet"])
    if not (operator and agent_ds):
        return

    # 1. Kubo's RPC port: never a containerPort/hostPort, never in a Service or NetworkPolicy.
    problems = []
    for o in workloads:
        spec = pod_spec(o)
        for c in containers(spec):
            for p in c.get("ports", []) or []:
                if p.get("containerPort") == KUBO_API_PORT or p.get("hostPort") == KUBO_API_PORT:
                    problems.append(f"{o['kind']}/{o['metadata']['name']} container {c['name']} exposes {p}")
    for o in objs:
        if o.get("kind") == "Service":
            for p in o["spec"].get("ports", []):
                if KUBO_API_PORT in (p.get("port"), p.get("targetPort"), p.get("nodePort")):
                    problems.append(f"Service/{o['metadata']['name']} targets {KUBO_API_PORT}: {p}")
                if isinstance(p.get("targetPort"), str):
                    # a named targetPort must not name a port that is 5001
                    for w in workloads:
                        for c in containers(pod_spec(w)):
                            for cp in c.get("ports", []) or []:
                                if cp.get("name") == p["targetPort"] and cp.get("containerPort") == KUBO_API_PORT:
                                    problems.append(f"Service/{o['metadata']['name']} targets {KUBO_API_PORT} by name")
        if o.get("kind") == "NetworkPolicy":
            for rule in o["spec"].get("ingress", []) or []:
                for p in rule.get("ports", []) or []:
                    if p.get("port") == KUBO_API_PORT:
                        problems.append(f"NetworkPolicy/{o['metadata']['name']} opens {KUBO_API_PORT}")
    for bad in ("/ip4/0.0.0.0/tcp/5001", "/ip6/::/tcp/5001", "0.0.0.0:5001"):
        if bad in text:
            problems.append(f"rendered output binds Kubo's API publicly: {bad}")
    check(f"[{label}] Kubo RPC port {KUBO_API_PORT} is never a container port, hostPort or Service", problems)

    # 2. The DaemonSet: hostNetwork, ClusterFirstWithHostNet, registry on 127.0.0.1:5050 only.
    ds = pod_spec(agent_ds)
    problems = []
    if ds.get("hostNetwork") is not True:
        problems.append("hostNetwork is not true")
    if ds.get("dnsPolicy") != "ClusterFirstWithHostNet":
        problems.append(f"dnsPolicy is {ds.get('dnsPolicy')!r}")
    agent_c = next((c for c in ds["containers"] if c["name"] == "agent"), None)
    if agent_c is None:
        problems.append("no container named agent")
    else:
        args = agent_c.get("args", [])
        if not args or args[0] != "serve":
            problems.append(f"agent args do not start with serve: {args}")
        if arg_value(args, "--listen") != AGENT_LISTEN:
            problems.append(f"agent --listen is {arg_value(args, '--listen')!r}, want {AGENT_LISTEN}")
        if env_value(agent_c, "IPFS_API") != LOOPBACK_API:
            problems.append("agent IPFS_API is not the loopback Kubo API")
        node_name = env_value(agent_c, "NODE_NAME")
        if not (isinstance(node_name, dict) and node_name.get("fieldRef", {}).get("fieldPath") == "spec.nodeName"):
            problems.append("NODE_NAME is not from fieldRef spec.nodeName")
        if env_value(agent_c, "LOG_FORMAT") != "json":
            problems.append("agent LOG_FORMAT is not json")
        rp = agent_c.get("readinessProbe", {}).get("httpGet", {})
        if rp.get("path") != "/readyz":
            problems.append("agent readinessProbe is not /readyz")
        # Only an administrator's namespaces answer original references: by default the release's.
        mirror_ns = [a.split("=", 1)[1] for a in args if a.startswith("--mirror-namespace=")]
        want_ns = [agent_ds["metadata"].get("namespace")] if label == "default" else ["ipfs-image", "platform-images"]
        if label in ("default", "all-features") and mirror_ns != want_ns:
            problems.append(f"agent --mirror-namespace values are {mirror_ns}, want {want_ns}")
        # Prefetch is bounded on every node by default.
        if label == "default" and arg_value(args, "--prefetch-budget") in (None, "", "0"):
            problems.append("agent --prefetch-budget is unset or off")
        # Private images answer original references only by the administrator's explicit choice.
        if label == "default" and "--mirror-private-images" in args:
            problems.append("agent --mirror-private-images is on by default")
        pre = agent_c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        want_flag = "--registries-dir" if label == "crio" else "--config-path"
        if "cleanup" not in pre or not any(a.startswith(want_flag) for a in pre):
            problems.append(f"agent preStop does not run cleanup {want_flag}: {pre}")
    # Ports of a hostNetwork pod are node ports: only metrics and the Kubo swarm may be listed.
    for c in containers(ds):
        for p in c.get("ports", []) or []:
            if p.get("containerPort") == 5050:
                problems.append(f"container {c['name']} lists port 5050 (would be a hostPort)")
            if p.get("name") not in ("metrics", "swarm", "swarm-quic"):
                problems.append(f"container {c['name']} lists unexpected port {p}")
    check(f"[{label}] agent DaemonSet: hostNetwork, registry on {AGENT_LISTEN}, mirror namespaces, no private images, a prefetch budget, preStop cleanup", problems)

    # 3. configure-containerd init container with the containerd config_path hostPath (CRI-O:
    #    configure-registries with the registries.conf.d hostPath, and nothing of containerd's).
    problems = []
    init = {c["name"]: c for c in ds.get("initContainers", [])}
    cc = init.get("configure-containerd")
    vols = {v["name"]: v for v in ds.get("volumes", [])}
    if label == "crio":
        cr = init.get("configure-registries")
        if cc is not None or "containerd-certs" in vols or "containerd-config" in vols:
            problems.append("containerd's init container or volumes rendered for runtime=crio")
        if cr is None:
            problems.append("no configure-registries init container")
        else:
            d = arg_value(cr.get("args", []), "--config-dir")
            m = {m["mountPath"]: m for m in cr.get("volumeMounts", [])}.get(d)
            if not d or m is None or vols.get(m["name"], {}).get("hostPath", {}).get("path") != d:
                problems.append(f"--config-dir {d} is not mounted from the same hostPath")
            if not arg_value(cr.get("args", []), "--registry"):
                problems.append("no --registry")
        check(f"[{label}] configure-registries init container writes the CRI-O drop-in directory (hostPath)", problems)
    elif cc is None:
        problems.append("no configure-containerd init container")
    else:
        args = cc.get("args", [])
        if not args or args[0] != "configure-containerd":
            problems.append(f"args: {args}")
        cp = arg_value(args, "--config-path")
        if not cp:
            problems.append("no --config-path")
        if not arg_value(args, "--registry"):
            problems.append("no --registry")
        mounts = {m["mountPath"]: m for m in cc.get("volumeMounts", [])}
        m = mounts.get(cp)
        if m is None or "hostPath" not in vols.get(m["name"], {}) or vols[m["name"]]["hostPath"]["path"] != cp:
            problems.append(f"{cp} is not mounted from the same hostPath")
        # containerd's own config: checked by the init container and by serve, mounted read-only.
        cfg = arg_value(args, "--containerd-config")
        cfg_dir = cfg.rsplit("/", 1)[0] if cfg else None
        if label == "default" and cfg != "/etc/containerd/config.toml":
            problems.append(f"--containerd-config is {cfg!r}")
        if cfg:
            if arg_value((agent_c or {}).get("args", []), "--containerd-config") != cfg:
                problems.append("serve does not check containerd's config too")
            for c in (cc, agent_c or {"name": "agent"}):
                cm = {m["mountPath"]: m for m in c.get("volumeMounts", [])}.get(cfg_dir)
                if cm is None or cm.get("readOnly") is not True or \
                        vols.get(cm["name"], {}).get("hostPath", {}).get("path") != cfg_dir:
                    problems.append(f"{c['name']}: {cfg_dir} is not a read-only mount of the same hostPath")
    if label != "crio":
        check(f"[{label}] configure-containerd init container writes containerd's config_path (hostPath) and checks containerd's config (read-only)", problems)

    # 4. Kubo: configured to 127.0.0.1 by the init script, not the image's start_ipfs.
    problems = []
    cm = next((o for o in objs if o.get("kind") == "ConfigMap" and o["metadata"]["name"].endswith("-kubo-init")), None)
    script = (cm or {}).get("data", {}).get("configure-kubo.sh", "")
    # The script takes the port from KUBO_API_PORT (default 5001; the tests run daemons side by
    # side); the address is loopback whatever the environment says.
    m_api = re.search(r'^api="?([^"\n]+)"?$', script, re.M)
    m_set = re.search(r"(?:ipfs config|cfg) Addresses\.API (\S+)", script)
    if not m_set:
        problems.append("kubo-init script does not set Addresses.API")
    else:
        value = m_set.group(1)
        if value == '"$api"' and m_api:
            value = m_api.group(1)
        if value not in ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/$KUBO_API_PORT"):
            problems.append(f"Addresses.API set to {value}")
        if '${KUBO_API_PORT:=5001}' not in script and "KUBO_API_PORT" in value:
            problems.append("KUBO_API_PORT has no default of 5001")
    for o in objs:
        if o.get("kind") in ("Deployment", "DaemonSet"):
            for c in pod_spec(o).get("initContainers", []) + pod_spec(o).get("containers", []):
                for e in c.get("env", []):
                    if e.get("name") == "KUBO_API_PORT" and e.get("value") != "5001":
                        problems.append(f"{o['kind']} {c['name']} moves Kubo's API to port {e.get('value')}")
                    # The gateway is the agent's (loopback, by the script); never the operator's.
                    if e.get("name") == "KUBO_GATEWAY_PORT" and (o is operator or not str(e.get("value")).isdigit()):
                        problems.append(f"{o['kind']} {c['name']} KUBO_GATEWAY_PORT={e.get('value')!r}")
    for needle in ("Discovery.MDNS.Enabled false", "AutoConf.Enabled false", 'Bootstrap "$KUBO_BOOTSTRAP"',
                   'Routing.Type "$KUBO_ROUTING_TYPE"', 'Datastore.StorageMax "$KUBO_STORAGE_MAX"',
                   "gateway='[]'", '/ip4/127.0.0.1/tcp/$KUBO_GATEWAY_PORT', "swarm.key"):
        if needle not in script:
            problems.append(f"kubo-init script lacks {needle!r}")
    for o in (operator, agent_ds):
        spec = pod_spec(o)
        names = [c["name"] for c in spec.get("initContainers", [])]
        if "kubo-init" not in names:
            problems.append(f"{o['kind']} has no kubo-init init container")
        kubo = next((c for c in spec["containers"] if c["name"] == "kubo"), None)
        if kubo is None:
            problems.append(f"{o['kind']} has no kubo container")
            continue
        if (kubo.get("command") or [None])[0] != "ipfs":
            problems.append(f"{o['kind']} kubo container uses the image entrypoint (start_ipfs binds the API to 0.0.0.0)")
        sec = kubo.get("securityContext", {})
        if not sec.get("runAsNonRoot") or sec.get("runAsUser") in (None, 0):
            problems.append(f"{o['kind']} kubo container is not non-root")
    if env_value(next(c for c in pod_spec(operator)["containers"] if c["name"] == "operator"), "IPFS_API") != LOOPBACK_API:
        problems.append("operator IPFS_API is not the loopback Kubo API")
    check(f"[{label}] Kubo API configured to 127.0.0.1 only; Kubo runs non-root from kubo-init's config", problems)

    # 5. Operator: args, probes, non-root, read-only root filesystem, PVC.
    problems = []
    spec = pod_spec(operator)
    op = next((c for c in spec["containers"] if c["name"] == "operator"), None)
    if op is None:
        problems.append("no operator container")
    else:
        if (op.get("args") or [None])[0] != "run":
            problems.append(f"operator args: {op.get('args')}")
        if not arg_value(op.get("args", []), "--metrics-listen"):
            problems.append("no --metrics-listen")
        # Every import is bounded in size and time.
        for flag in ("--max-image-size", "--import-timeout"):
            if arg_value(op.get("args", []), flag) in (None, "", "0", "0s"):
                problems.append(f"operator {flag} is unset or off")
        # The registry allow-list: empty by default (every registry), the values' list otherwise.
        allowed = [a.split("=", 1)[1] for a in op.get("args", []) if a.startswith("--allowed-registry=")]
        want_allowed = {"default": [], "all-features": ["docker.io", "ghcr.io", "*.corp.example", "registry.corp.example:5000"]}
        if label in want_allowed and allowed != want_allowed[label]:
            problems.append(f"operator --allowed-registry values are {allowed}, want {want_allowed[label]}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if op.get(probe, {}).get("httpGet", {}).get("path") != path:
                problems.append(f"{probe} is not {path}")
        sec = op.get("securityContext", {})
        if not sec.get("runAsNonRoot") or sec.get("readOnlyRootFilesystem") is not True:
            problems.append("operator container is not non-root with a read-only root filesystem")
        if env_value(op, "LOG_FORMAT") != "json":
            problems.append("operator LOG_FORMAT is not json")
    check(f"[{label}] operator Deployment: run, probes, non-root, read-only root filesystem", problems)

    # 6. Least privilege elsewhere: nothing privileged, no privilege escalation, no hostPID/IPC.
    problems = []
    for o in workloads:
        spec = pod_spec(o)
        for k in ("hostPID", "hostIPC"):
            if spec.get(k):
                problems.append(f"{o['metadata']['name']} sets {k}")
        for c in containers(spec):
            sec = c.get("securityContext") or {}
            if sec.get("privileged"):
                problems.append(f"{c['name']} is privileged")
            if sec.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{c['name']} does not set allowPrivilegeEscalation: false")
            if "ALL" not in (sec.get("capabilities") or {}).get("drop", []):
                problems.append(f"{c['name']} does not drop ALL capabilities")
            added = set((sec.get("capabilities") or {}).get("add", []) or [])
            if added - {"CHOWN"} or (added and c["name"] != "kubo-repo-owner"):
                problems.append(f"{c['name']} adds capabilities {sorted(added)}")
            if sec.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{c['name']} has a writable root filesystem")
    check(f"[{label}] no privileged container, no privilege escalation, capabilities dropped", problems)

    # 7. RBAC: exactly the minimal rule sets, namespaced ones in the workload's namespace.
    problems = []
    roles = [o for o in objs if o.get("kind") in ("ClusterRole", "Role") and component(o) != "user"]
    if len(roles) != len(EXPECTED_RBAC):
        problems.append(f"expected {len(EXPECTED_RBAC)} roles, got {[(r['kind'], r['metadata']['name']) for r in roles]}")
    for (comp, kind), expected in EXPECTED_RBAC.items():
        role = one(objs, kind, comp)
        if role is None:
            problems.append(f"no {kind} for {comp}")
            continue
        got = set()
        for rule in role.get("rules", []):
            if rule.get("resourceNames") or rule.get("nonResourceURLs"):
                problems.append(f"{comp}: unexpected rule shape {rule}")
            got |= triples([(rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", []))])
        if any("*" in t for t in got):
            problems.append(f"{comp}: wildcard in rules")
        if got != expected:
            problems.append(f"{comp} {kind}: extra {sorted(got - expected)}, missing {sorted(expected - got)}")
        binding = one(objs, BINDING[kind], comp)
        sa = one(objs, "ServiceAccount", comp)
        workload = operator if comp == "operator" else agent_ds
        sa_name = pod_spec(workload).get("serviceAccountName")
        home = workload["metadata"].get("namespace")
        if kind == "Role" and role["metadata"].get("namespace") != home:
            problems.append(f"{comp}: Role in {role['metadata'].get('namespace')}, workload in {home}")
        if binding is None or binding["roleRef"] != {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role["metadata"]["name"]}:
            problems.append(f"{comp}: {BINDING[kind]} missing or bound to another role")
        elif [(s.get("kind"), s.get("name"), s.get("namespace")) for s in binding.get("subjects", [])] != [("ServiceAccount", sa_name, home)]:
            problems.append(f"{comp}: binding subjects {binding.get('subjects')} != pod's ServiceAccount {sa_name} in {home}")
        elif kind == "Role" and binding["metadata"].get("namespace") != home:
            problems.append(f"{comp}: RoleBinding not in {home}")
        if sa is None or sa["metadata"]["name"] != sa_name:
            problems.append(f"{comp}: ServiceAccount {sa_name} not rendered")
    check(f"[{label}] RBAC rules are exactly the minimal sets", problems)

    # 7b. The users' roles: exactly these rules and aggregation labels, bound by no one here.
    problems = []
    user_roles = {o["metadata"]["name"].rsplit("-", 1)[-1]: o for o in objs
                  if o.get("kind") == "ClusterRole" and component(o) == "user"}
    if set(user_roles) != set(EXPECTED_USER_ROLES):
        problems.append(f"user roles {sorted(user_roles)} != {sorted(EXPECTED_USER_ROLES)}")
    for name, (aggregate_to, expected) in EXPECTED_USER_ROLES.items():
        role = user_roles.get(name)
        if role is None:
            continue
        labels = role["metadata"].get("labels", {})
        got_to = {k[len(AGGREGATE):] for k, v in labels.items() if k.startswith(AGGREGATE) and v == "true"}
        if got_to != aggregate_to:
            problems.append(f"user {name}: aggregated to {sorted(got_to)}, expected {sorted(aggregate_to)}")
        got = set()
        for rule in role.get("rules", []):
            got |= triples([(rule.get("apiGroups", []), rule.get("resources", []), rule.get("verbs", []))])
        if got != expected:
            problems.append(f"user {name}: extra {sorted(got - expected)}, missing {sorted(expected - got)}")
        for o in objs:
            if o.get("kind") in BINDING.values() and o.get("roleRef", {}).get("name") == role["metadata"]["name"]:
                problems.append(f"user {name}: bound by {o['metadata']['name']}")
    check(f"[{label}] users' roles aggregate into admin/edit/view, no status write", problems)

    # 8. Every image pinned by a version tag.
    problems = []
    for o in workloads:
        for c in containers(pod_spec(o)):
            img = c.get("image", "")
            m = IMAGE_RE.match(img)
            if not m:
                problems.append(f"{c['name']}: {img!r} has no explicit tag (or is malformed)")
            elif m.group("tag") == "latest" or not VERSION_TAG_RE.match(m.group("tag")):
                problems.append(f"{c['name']}: {img!r} is not pinned by a version tag")
    check(f"[{label}] every image has an explicit version tag (no latest)", problems)

    # 9. Standard labels on every object.
    problems = []
    for o in objs:
        if o.get("kind") in ("CustomResourceDefinition", "Namespace"):
            continue
        labels = o.get("metadata", {}).get("labels", {}) or {}
        missing = [k for k in STANDARD_LABELS if k not in labels]
        if missing:
            problems.append(f"{o['kind']}/{o['metadata']['name']} lacks {missing}")
    for o in workloads:
        tl = o["spec"]["template"]["metadata"].get("labels", {})
        sel = o["spec"]["selector"]["matchLabels"]
        if any(tl.get(k) != v for k, v in sel.items()):
            problems.append(f"{o['metadata']['name']}: selector does not match the pod labels")
    check(f"[{label}] standard labels on every object; selectors match", problems)

    # 10. Agent scheduling defaults: every node, node-critical.
    problems = []
    if label == "default":
        if {"operator": "Exists"} not in (ds.get("tolerations") or []):
            problems.append(f"tolerations {ds.get('tolerations')} do not tolerate everything")
        if ds.get("priorityClassName") != "system-node-critical":
            problems.append(f"priorityClassName {ds.get('priorityClassName')}")
        if not any(o.get("kind") == "PersistentVolumeClaim" for o in objs):
            problems.append("no PVC for the operator's Kubo repo")
        if "hostPath" not in next(v for v in ds["volumes"] if v["name"] == "kubo-repo"):
            problems.append("agent Kubo repo is not a hostPath by default")
        optional = {"ServiceMonitor", "NetworkPolicy", "Service"}
        present = optional & {o.get("kind") for o in objs}
        if present:
            problems.append(f"optional objects rendered by default: {sorted(present)}")
        # A private IPFS network by default: one Secret, a generated key, mounted by both Kubos.
        secrets = [o for o in objs if o.get("kind") == "Secret"]
        key = (secrets[0].get("stringData") or {}).get("swarm.key", "") if len(secrets) == 1 else ""
        if not re.fullmatch(r"/key/swarm/psk/1\.0\.0/\n/base16/\n[0-9a-f]{64}\n?", key):
            problems.append(f"default Secrets {[s['metadata']['name'] for s in secrets]}: no generated swarm key ({key!r})")
        for kind in ("Deployment", "DaemonSet"):
            w = next(o for o in objs if o.get("kind") == kind)
            vols = {v["name"]: v for v in pod_spec(w).get("volumes", [])}
            if secrets and vols.get("swarm-key", {}).get("secret", {}).get("secretName") != secrets[0]["metadata"]["name"]:
                problems.append(f"{kind} does not mount the swarm key Secret")
        check(f"[{label}] defaults: agent tolerates all taints, system-node-critical, PVC, a generated swarm key, no optional objects", problems)

    # 11. Optional objects have a sane shape (kinds kubernetes-validate does not know).
    problems = []
    for o in objs:
        if o.get("kind") == "ServiceMonitor":
            if o.get("apiVersion") != "monitoring.coreos.com/v1":
                problems.append(f"ServiceMonitor apiVersion {o.get('apiVersion')}")
            spec = o.get("spec", {})
            sel = spec.get("selector", {}).get("matchLabels", {})
            svc = [s for s in objs if s.get("kind") == "Service"
                   and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
            if len(svc) != 1:
                problems.append(f"ServiceMonitor/{o['metadata']['name']} selects {len(svc)} Services")
            eps = spec.get("endpoints", [])
            if not eps or any(not isinstance(e.get("port"), str) for e in eps):
                problems.append(f"ServiceMonitor/{o['metadata']['name']} endpoints need named ports")
            elif svc and not {e["port"] for e in eps} <= {p.get("name") for p in svc[0]["spec"]["ports"]}:
                problems.append(f"ServiceMonitor/{o['metadata']['name']} names a port its Service lacks")
            unknown = set(o) - {"apiVersion", "kind", "metadata", "spec"}
            if unknown:
                problems.append(f"ServiceMonitor has unknown top-level keys {unknown}")
        if o.get("kind") == "ConfigMap" and "grafana_dashboard" in (o["metadata"].get("labels") or {}):
            import json
            for k, v in o["data"].items():
                try:
                    d = json.loads(v)
                except ValueError as e:
                    problems.append(f"dashboard {k} is not JSON: {e}")
                    continue
                exprs = " ".join(t.get("expr", "") for p in d.get("panels", []) for t in p.get("targets", []))
                for metric in ("ipfs_image_agent_requests_total", "ipfs_image_agent_bytes_served_total",
                               "ipfs_image_agent_resolve_duration_seconds", "ipfs_image_operator_reconcile_total"):
                    if metric not in exprs:
                        problems.append(f"dashboard has no panel for {metric}")
    check(f"[{label}] ServiceMonitors and Grafana dashboard are well-formed (when rendered)", problems)

    # 12. Private network: the key reaches every Kubo and QUIC is off.
    if label == "all-features":
        problems = []
        for o in (operator, agent_ds):
            spec = pod_spec(o)
            kinit = next(c for c in spec["initContainers"] if c["name"] == "kubo-init")
            if env_value(kinit, "KUBO_PRIVATE_NETWORK") != "true":
                problems.append(f"{o['kind']}: KUBO_PRIVATE_NETWORK is not true")
            if "/swarm-key" not in [m["mountPath"] for m in kinit.get("volumeMounts", [])]:
                problems.append(f"{o['kind']}: swarm key not mounted into kubo-init")
            if "quic" in (env_value(kinit, "KUBO_SWARM_ADDRESSES") or ""):
                problems.append(f"{o['kind']}: QUIC listen address in a private network")
            kubo = next(c for c in spec["containers"] if c["name"] == "kubo")
            if any(p.get("protocol") == "UDP" for p in kubo.get("ports", [])):
                problems.append(f"{o['kind']}: UDP swarm port in a private network")
        cc = next(c for c in ds["initContainers"] if c["name"] == "configure-containerd")
        if "--registry=_default" not in cc.get("args", []):
            problems.append("mirrorAllRegistries did not add --registry=_default")
        check(f"[{label}] swarm key mounted into every Kubo, TCP only; mirrorAllRegistries adds _default", problems)


def self_test(path):
    """Plant one fault at a time in a default render; the matching check must fail."""
    import copy

    base = load(path)
    with open(path) as f:
        text = f.read()

    def find(objs, kind, comp):
        return one(objs, kind, comp)

    def agent(objs):
        return next(c for c in pod_spec(find(objs, "DaemonSet", "agent"))["containers"] if c["name"] == "agent")

    def kubo(objs, comp):
        kind = "Deployment" if comp == "operator" else "DaemonSet"
        return next(c for c in pod_spec(find(objs, kind, comp))["containers"] if c["name"] == "kubo")

    def user_role(objs, name):
        return next(x for x in objs if x.get("kind") == "ClusterRole" and component(x) == "user"
                    and x["metadata"]["name"].endswith("-" + name))

    faults = {
        "Kubo RPC port": lambda o: kubo(o, "operator").setdefault("ports", []).append({"containerPort": 5001}),
        "Kubo RPC port 5001 is never a container port, hostPort or Service": lambda o: o.append(
            {"kind": "Service", "metadata": {"name": "x", "labels": {}}, "spec": {"ports": [{"port": 80, "targetPort": 5001}]}}),
        "agent DaemonSet": lambda o: pod_spec(find(o, "DaemonSet", "agent")).update(hostNetwork=False),
        "registry on": lambda o: agent(o).update(args=["serve", "--listen=0.0.0.0:5050"]),
        "mirror namespaces": lambda o: agent(o)["args"].append("--mirror-namespace=*"),
        "a generated swarm key": lambda o: o.remove(next(x for x in o if x.get("kind") == "Secret")),
        "a prefetch budget": lambda o: agent(o).update(args=[a for a in agent(o)["args"] if not a.startswith("--prefetch-budget")]),
        "no private images": lambda o: agent(o)["args"].append("--mirror-private-images"),
        "Kubo API configured": lambda o: next(c for c in o if c.get("kind") == "ConfigMap")["data"].update(
            {"configure-kubo.sh": "cfg Addresses.API /ip4/0.0.0.0/tcp/5001"}),
        "Kubo runs non-root": lambda o: kubo(o, "agent").pop("command"),
        "RBAC rules": lambda o: find(o, "ClusterRole", "operator")["rules"][0]["verbs"].append("delete"),
        "RBAC rules are exactly": lambda o: find(o, "ClusterRole", "agent")["rules"].pop(),
        # The agent's Pod rules made cluster-wide again: caught (two ClusterRole rule sets differ).
        "RBAC rules are exactly the": lambda o: find(o, "ClusterRole", "agent")["rules"].append(
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}),
        "RBAC rules are exactly the minimal": lambda o: find(o, "Role", "agent")["metadata"].update(namespace="default"),
        # A user may forge status: caught.
        "users' roles aggregate": lambda o: user_role(o, "view")["rules"].append(
            {"apiGroups": ["ipfsimage.dev"], "resources": ["ipfsimages/status"], "verbs": ["patch"]}),
        # The edit rights reach view users too: caught.
        "users' roles aggregate into": lambda o: user_role(o, "edit")["metadata"]["labels"].update(
            {AGGREGATE + "view": "true"}),
        "explicit version tag": lambda o: kubo(o, "agent").update(image="docker.io/ipfs/kubo:latest"),
        "every image has": lambda o: agent(o).update(image="ghcr.io/ipfs-image-operator/ipfs-image-agent"),
        "no privileged container": lambda o: agent(o)["securityContext"].update(privileged=True),
        "operator Deployment": lambda o: next(c for c in pod_spec(find(o, "Deployment", "operator"))["containers"]
                                              if c["name"] == "operator")["securityContext"].update(readOnlyRootFilesystem=False),
    }
    failures = []
    results.clear()
    checks_for("default", base, text)
    if any(probs for _, probs in results):
        failures.append("the unmodified render already fails")
    for needle, plant in faults.items():
        objs = copy.deepcopy(base)
        plant(objs)
        results.clear()
        checks_for("default", objs, text)
        # the fault must make a check whose name contains the needle fail
        if not any(probs and needle in n for n, probs in results):
            failures.append(needle)
    results.clear()
    check("assertions catch planted faults (self-test)", [f"fault not caught: {f}" for f in failures])


def main():
    if sys.argv[1:2] == ["--self-test"]:
        self_test(sys.argv[2])
        for name, problems in results:
            print(("ok - " if not problems else "not ok - ") + name)
            for p in problems:
                print("    " + p)
        return
    for spec in sys.argv[1:]:
        label, path = spec.split("=", 1)
        with open(path) as f:
            text = f.read()
        checks_for(label, load(path), text)
    for name, problems in results:
        print(("ok - " if not problems else "not ok - ") + name)
        for p in problems:
            print("    " + p)


if __name__ == "__main__":
    main()
