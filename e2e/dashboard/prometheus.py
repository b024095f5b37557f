#!/usr/bin/env python3
"""The chart's dashboard against a real Prometheus (standard library only, except `render`).

    prometheus.py scrape-config --kubeconfig F < servicemonitors.json > prometheus.yml
        The scrape config the ServiceMonitors imply, as prometheus-operator generates it:
        Kubernetes endpoints discovery in the monitors' namespaces, kept by the Service's labels
        and the endpoint's port name, the operator's standard target labels (namespace, service,
        pod, container, endpoint, job), then each endpoint's own relabelings.
    prometheus.py wait-up --prometheus URL --jobs N [--timeout S]
        Wait until N scrape jobs are up (so what follows is scraped from its start).
    prometheus.py check --prometheus URL --dashboard F --jobs N [--window 10m] [--timeout S]
        Wait until N scrape jobs are up, then run every query of every panel; fails, naming the
        panel, when a query returns no series.
    prometheus.py render --prometheus URL --dashboard F --out DIR [--minutes M] [--settle S]
        Draw each dashboard row's panels from the query_range API to DIR/<row>.png (matplotlib),
        after S more seconds of scrapes; rates over 2 minutes, so a short run's pulls show.
"""
import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request


def sanitize(label):
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def scrape_config(monitors, kubeconfig):
    jobs = []
    for sm in monitors["items"]:
        meta, spec = sm["metadata"], sm["spec"]
        namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [meta["namespace"]]
        for i, ep in enumerate(spec.get("endpoints", [])):
            relabel = []
            for k, v in sorted(spec.get("selector", {}).get("matchLabels", {}).items()):
                relabel.append({"action": "keep", "source_labels": [f"__meta_kubernetes_service_label_{sanitize(k)}",
                                                                    f"__meta_kubernetes_service_labelpresent_{sanitize(k)}"],
                                "regex": f"({re.escape(v)});true"})
            relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                            "regex": re.escape(ep["port"])})
            for meta_label, target in [("namespace", "namespace"), ("service_name", "service"),
                                       ("pod_name", "pod"), ("pod_container_name", "container")]:
                relabel.append({"source_labels": [f"__meta_kubernetes_{meta_label}"], "target_label": target})
            relabel.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"})
            relabel.append({"target_label": "endpoint", "replacement": ep["port"]})
            for r in ep.get("relabelings", []):
                rule = {"source_labels": r.get("sourceLabels", []), "target_label": r.get("targetLabel")}
                for key, name in [("regex", "regex"), ("replacement", "replacement"), ("action", "action"),
                                  ("separator", "separator")]:
                    if key in r:
                        rule[name] = r[key]
                relabel.append({k: v for k, v in rule.items() if v not in (None, [])})
            jobs.append({
                "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}",
                "honor_labels": ep.get("honorLabels", False),
                "scrape_interval": ep.get("interval", "30s"),
                "scrape_timeout": ep.get("scrapeTimeout", "10s"),
                "metrics_path": ep.get("path", "/metrics"),
                "scheme": ep.get("scheme", "http"),
                "kubernetes_sd_configs": [{"role": "endpoints", "kubeconfig_file": kubeconfig,
                                           "namespaces": {"names": namespaces}}],
                "relabel_configs": relabel,
            })
    # JSON is YAML: Prometheus reads it as its config file.
    return json.dumps({"global": {"evaluation_interval": "15s"}, "scrape_configs": jobs}, indent=2)


def api(prom, path, **params):
    url = f"{prom}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def panels(dashboard):
    """(row title, panel) for every panel that has queries, in order."""
    row = ""
    for p in dashboard["panels"]:
        if p["type"] == "row":
            row = p["title"]
        elif p.get("targets"):
            yield row, p


def concrete(expr, window):
    """A panel's query with Grafana's variables bound as "all nodes" and the given window."""
    return expr.replace("$__rate_interval", window).replace('node=~"$node"', 'node=~".*"')


def wait_up(args, deadline):
    """Until every ServiceMonitor's job is scraped and up."""
    while True:
        try:
            up = api(args.prometheus, "query", query="up")["result"]
        except OSError as e:  # not listening yet
            up = [{"error": str(e)}]
        jobs = {r["metric"]["job"] for r in up if r.get("value", [0, "0"])[1] == "1"}
        if len(jobs) >= args.jobs:
            print(f"prometheus: jobs up: {', '.join(sorted(jobs))}")
            return
        if time.monotonic() > deadline:
            sys.exit(f"FAIL: {len(jobs)} of {args.jobs} scrape jobs up: {up}")
        time.sleep(1)


def check(args):
    dashboard = json.load(open(args.dashboard))
    deadline = time.monotonic() + args.timeout
    wait_up(args, deadline)
    while True:  # rates need two samples: poll until every query has series, or the deadline
        empty, report = [], []
        for _, p in panels(dashboard):
            for t in p["targets"]:
                result = api(args.prometheus, "query", query=concrete(t["expr"], args.window))["result"]
                report.append(f"  panel {p['title']!r} {t['refId']}: {len(result)} series")
                if not result:
                    empty.append(f"{p['title']!r} ({t['refId']}: {t['expr']})")
        if not empty:
            print("\n".join(report))
            print(f"prometheus: every query of {len(list(panels(dashboard)))} panels returned series")
            return
        if time.monotonic() > deadline:
            print("\n".join(report))
            sys.exit("FAIL: panels whose query returned no series:\n  " + "\n  ".join(empty))
        time.sleep(1)


def render(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.dates as mdates
    from datetime import datetime

    dashboard = json.load(open(args.dashboard))
    # A demo run is short: let a few more scrapes in, so that each rate has points after the
    # pulls it counts (this is for the pictures, not a check).
    time.sleep(args.settle)
    end = time.time()
    start = end - 60 * args.minutes - args.settle
    step = max(5, int(60 * args.minutes / 240))
    rows = {}
    for row, p in panels(dashboard):
        rows.setdefault(row, []).append(p)
    for n, (row, ps) in enumerate(rows.items(), 1):
        cols = 2
        lines = (len(ps) + cols - 1) // cols
        fig, axes = plt.subplots(lines, cols, figsize=(14, 3.6 * lines), squeeze=False)
        fig.suptitle(row, fontsize=14, x=0.01, ha="left")
        for ax, p in zip(axes.flat, ps):
            unit = p["fieldConfig"]["defaults"].get("unit", "")
            for t in p["targets"]:
                data = api(args.prometheus, "query_range", query=concrete(t["expr"], f"{max(step * 4, 120)}s"),
                           start=start, end=end, step=step)["result"]
                # The series that moved first, so the legend's few lines name them.
                data.sort(key=lambda d: -max((abs(float(v[1])) for v in d["values"] if v[1] != "NaN"), default=0))
                for series in data:
                    legend = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: series["metric"].get(m.group(1), ""),
                                    t.get("legendFormat") or t["expr"])
                    xs = [datetime.fromtimestamp(float(v[0])) for v in series["values"]]
                    ys = [float(v[1]) for v in series["values"]]
                    ax.plot(xs, ys, label=legend.strip() or "value", marker=".", markersize=3)
            ax.set_title(p["title"], fontsize=11, loc="left")
            ax.set_ylabel(unit)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.grid(alpha=0.3)
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                ax.legend(handles[:8], labels[:8], fontsize=7, loc="upper left")
            if not any(len(line.get_xdata()) and any(y == y for y in line.get_ydata()) for line in ax.get_lines()):
                ax.text(0.5, 0.5, "no data in this run (NaN: nothing to divide or no samples)",
                        ha="center", va="center", transform=ax.transAxes, color="gray")
        for ax in list(axes.flat)[len(ps):]:
            ax.axis("off")
        fig.tight_layout()
        name = f"{n}-{re.sub(r'[^a-z0-9]+', '-', row.lower()).strip('-')}.png"
        fig.savefig(f"{args.out}/{name}", dpi=80)
        plt.close(fig)
        print(f"render: {args.out}/{name}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scrape-config")
    s.add_argument("--kubeconfig", required=True)
    w = sub.add_parser("wait-up")
    w.add_argument("--prometheus", required=True)
    w.add_argument("--jobs", type=int, required=True)
    w.add_argument("--timeout", type=float, default=120)
    c = sub.add_parser("check")
    c.add_argument("--prometheus", required=True)
    c.add_argument("--dashboard", required=True)
    c.add_argument("--jobs", type=int, required=True)
    c.add_argument("--window", default="10m")
    c.add_argument("--timeout", type=float, default=120)
    r = sub.add_parser("render")
    r.add_argument("--prometheus", required=True)
    r.add_argument("--dashboard", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--minutes", type=float, default=15)
    r.add_argument("--settle", type=float, default=45, help="seconds to wait before drawing")
    args = ap.parse_args()
    if args.cmd == "scrape-config":
        print(scrape_config(json.load(sys.stdin), args.kubeconfig))
    elif args.cmd == "wait-up":
        wait_up(args, time.monotonic() + args.timeout)
    elif args.cmd == "check":
        check(args)
    else:
        render(args)


if __name__ == "__main__":
    main()
