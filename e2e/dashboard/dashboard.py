#!/usr/bin/env python3
"""The chart's Grafana dashboard, as code: writes charts/ipfs-image/dashboards/ipfs-image.json.

    python3 e2e/dashboard/dashboard.py           # write it
    python3 e2e/dashboard/dashboard.py --check   # fail when the checked-in JSON differs

Each panel answers one question a person running the mirror asks; `questions()` lists them. The
real-node test (e2e/node/run.sh) runs every panel's queries against a real Prometheus and
fails, naming the panel, when one returns no series.
"""
import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[2] / "charts/ipfs-image/dashboards/ipfs-image.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
NODE = 'node=~"$node"'


def panel(title, description, unit, *queries, kind="timeseries", stack=False):
    """queries: (expr, legend) pairs."""
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
        for i, (expr, legend) in enumerate(queries)
    ]
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": targets,
    }
    if kind == "timeseries":
        p["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi"},
        }
        if stack:
            p["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}, "fillOpacity": 20}
    else:
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "value_and_name"}
    return p


def sections():
    return [
        ("Mirror: are pulls served from IPFS?", [
            panel("Mirror hit ratio by registry",
                  "Share of mirror lookups (original references) answered from IPFS; the rest fell back to the upstream registry.",
                  "percentunit",
                  (f'sum by (registry) (rate(ipfs_image_agent_mirror_requests_total{{result="hit",{NODE}}}[{RATE}]))'
                   f' / sum by (registry) (rate(ipfs_image_agent_mirror_requests_total{{{NODE}}}[{RATE}]))', "{{registry}}")),
            panel("Fallbacks to upstream by cause",
                  "Mirror requests answered 'not here' so containerd pulled from upstream: miss (no allowed IpfsImage holds it), ipfs_timeout, ipfs_unreachable, invalid.",
                  "reqps",
                  (f"sum by (registry, cause) (rate(ipfs_image_agent_mirror_fallbacks_total{{{NODE}}}[{RATE}]))", "{{registry}} {{cause}}"),
                  stack=True),
            panel("Registry requests by route and status",
                  "Every request to the agents' registry: ipfs (localhost:5050/ipfs/<CID>) and mirror routes.",
                  "reqps",
                  (f"sum by (route, status) (rate(ipfs_image_agent_requests_total{{{NODE}}}[{RATE}]))", "{{route}} {{status}}")),
            panel("Verification failures",
                  "Blobs whose bytes from IPFS did not match their digest: the response was aborted. Anything above zero needs a look.",
                  "short",
                  (f"sum by (kind) (increase(ipfs_image_agent_verification_failures_total{{{NODE}}}[{RATE}]))", "{{kind}}")),
        ]),
        ("Blob streams: how the agents read IPFS", [
            panel("IPFS cat streams opened",
                  "blob: a whole-blob GET opened a stream; range: a ranged GET; detached: a client fell behind a shared stream; resumed: a stream broke part-way and was reopened. shared: GETs that joined a stream another GET had opened (no cat of their own).",
                  "ops",
                  (f"sum by (reason) (rate(ipfs_image_agent_ipfs_cat_streams_total{{{NODE}}}[{RATE}]))", "{{reason}}"),
                  (f"sum(rate(ipfs_image_agent_blob_streams_shared_total{{{NODE}}}[{RATE}]))", "shared")),
            panel("Bytes held by shared streams",
                  "Memory the shared blob streams hold for their clients now (bounded by about the share window + 512 KiB each).",
                  "bytes",
                  (f"sum by (node) (ipfs_image_agent_blob_stream_buffered_bytes{{{NODE}}})", "{{node}}")),
            panel("Bytes served by kind",
                  "Body bytes the agents sent to the runtime.",
                  "Bps",
                  (f"sum by (kind) (rate(ipfs_image_agent_bytes_served_total{{{NODE}}}[{RATE}]))", "{{kind}}")),
            panel("IPFS failures and image resolve time",
                  "Failed calls to the node's Kubo by kind, and the p95 time to resolve an image DAG on a cache miss.",
                  "short",
                  (f"sum by (kind) (rate(ipfs_image_agent_ipfs_errors_total{{{NODE}}}[{RATE}]))", "errors {{kind}}"),
                  (f"histogram_quantile(0.95, sum by (le) (rate(ipfs_image_agent_resolve_duration_seconds_bucket{{{NODE}}}[{RATE}])))", "resolve p95 (s)")),
        ]),
        ("Operator: imports", [
            panel("Import duration",
                  "Wall time of successful imports and adoptions (p50, p95).",
                  "s",
                  (f"histogram_quantile(0.5, sum by (le) (rate(ipfs_image_operator_import_duration_seconds_bucket[{RATE}])))", "p50"),
                  (f"histogram_quantile(0.95, sum by (le) (rate(ipfs_image_operator_import_duration_seconds_bucket[{RATE}])))", "p95")),
            panel("Import bytes",
                  "Bytes of the images imported or adopted.",
                  "Bps",
                  (f"sum(rate(ipfs_image_operator_import_bytes_total[{RATE}]))", "imported")),
            panel("Reconcile failures by reason",
                  "Failed reconciles by condition reason (the README's Troubleshooting section says what each means); KubernetesApi: the API server refused or failed a call.",
                  "short",
                  (f"sum by (reason) (increase(ipfs_image_operator_reconcile_failures_total[{RATE}]))", "{{reason}}"),
                  stack=True),
            panel("Leader and reconciles",
                  "1 for the replica that holds the leader Lease; reconciles per second and in flight.",
                  "short",
                  ("max by (pod) (ipfs_image_operator_leader)", "leader {{pod}}"),
                  (f"sum(rate(ipfs_image_operator_reconcile_total[{RATE}]))", "reconciles/s"),
                  ("sum(ipfs_image_operator_reconciles_in_flight)", "in flight")),
        ]),
        ("Nodes: what images take on disk", [
            panel("Pinned images per node",
                  "IpfsImages whose image the node holds pinned (prefetch).",
                  "short",
                  (f"sum by (node) (ipfs_image_agent_pinned_images{{{NODE}}})", "{{node}}")),
            panel("Pinned bytes per node",
                  "Bytes of the images the node holds pinned, each image counted once.",
                  "bytes",
                  (f"sum by (node) (ipfs_image_agent_pinned_bytes{{{NODE}}})", "{{node}}")),
            panel("Kubo repository use against its limit",
                  "Each node's Kubo repository (pinned images and cached blocks) as a share of its Datastore.StorageMax; Kubo's GC starts near the limit.",
                  "percentunit",
                  (f"sum by (node) (ipfs_image_agent_ipfs_repo_size_bytes{{{NODE}}}) / sum by (node) (ipfs_image_agent_ipfs_repo_max_bytes{{{NODE}}})", "{{node}}")),
            panel("Kubo repository size",
                  "Bytes in each node's Kubo repository, and its limit.",
                  "bytes",
                  (f"sum by (node) (ipfs_image_agent_ipfs_repo_size_bytes{{{NODE}}})", "{{node}} used"),
                  (f"sum by (node) (ipfs_image_agent_ipfs_repo_max_bytes{{{NODE}}})", "{{node}} limit")),
            panel("Runtime configuration problems",
                  "1 when a node's containerd configuration keeps it from using the mirror, by problem (the agent's log says what to change).",
                  "short",
                  (f"sum by (node, problem) (ipfs_image_agent_runtime_config_problems{{{NODE}}})", "{{node}} {{problem}}")),
        ]),
    ]


def dashboard():
    panels, y, pid = [], 0, 1
    for title, row in sections():
        panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, p in enumerate(row):
            p = {"id": pid, **p, "gridPos": {"x": 12 * (i % 2), "y": y + 8 * (i // 2), "w": 12, "h": 8}}
            panels.append(p)
            pid += 1
        y += 8 * ((len(row) + 1) // 2)
    return {
        "title": "IPFS images",
        "uid": "ipfs-image",
        "description": "ipfs-image-operator: mirror hits and fallbacks, blob streams, imports, and what images take on each node's disk.",
        "editable": True,
        "schemaVersion": 39,
        "version": 2,
        "tags": ["ipfs", "ipfs-image-operator"],
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source", "current": {}},
            {"name": "node", "type": "query", "label": "Node", "datasource": DS,
             "query": {"query": "label_values(ipfs_image_agent_requests_total, node)", "refId": "node"},
             "definition": "label_values(ipfs_image_agent_requests_total, node)",
             "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2,
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


def render():
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != render():
            sys.exit(f"{OUT} differs from e2e/dashboard/dashboard.py: run python3 e2e/dashboard/dashboard.py")
        print("dashboard: up to date")
    else:
        OUT.write_text(render())
        print(f"wrote {OUT}")
