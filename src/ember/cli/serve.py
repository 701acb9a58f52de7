"""``ember serve`` (a model server for a bundle) and ``ember monitor`` (a live terminal view of one)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SERVE_EXAMPLES = """examples:
  ember serve digits-cnn@production --port 8000        # a registry reference
  ember serve runs/digits-cnn.ember --max-batch 32 --max-wait-ms 1
  ember serve digits.ember --plan plan.json            # the backend `ember plan` chose
  curl -s localhost:8000/v1/predict -H 'content-type: image/png' --data-binary @digit.png
  ember serve shakespeare.ember                        # a language model: POST /v1/generate
  curl -sN localhost:8000/v1/generate -H 'content-type: application/json' -d '{"prompt": "ROMEO:", "max_new_tokens": 200, "stream": true}'
  ember serve digits-ddpm.ember                        # a model that makes images: PNG from /v1/generate
  curl -s localhost:8000/v1/generate -H 'content-type: application/json' -d '{"n": 16, "class": 7}' -o sevens.png
"""

MONITOR_EXAMPLES = """examples:
  ember monitor http://127.0.0.1:8000                  # refreshes every 2 s; Ctrl-C to stop
  ember monitor http://127.0.0.1:8000 --once           # one snapshot (for scripts and logs)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP (dynamic batching, metrics, drift)",
        description="Serve a model bundle: POST /v1/predict (what its task answers: classes, boxes, masks ...),\n"
        'POST /v1/generate (text models: text in, text out, streamed as JSON lines with "stream": true;\n'
        "models that make images: PNG images),\n"
        "GET /healthz /readyz /metrics /v1/model /v1/drift /openapi.json.\n"
        "Binds 127.0.0.1 unless --host says otherwise. SIGTERM drains requests in flight.\n\n"
        + SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="a bundle file (.ember) or a registry reference (name@alias, name@3)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--plan", metavar="FILE", help="serving plan from `ember plan` (default: plan.json beside the bundle)"
    )
    p.add_argument(
        "--backend", help="override the plan's backend: eager, compiled, bf16, int8-dynamic, onnxruntime, ..."
    )
    p.add_argument(
        "--max-batch", type=int, help="most items per model batch (plan's, else 64; 1 disables batching)"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        help="the longest a request waits for others to join its batch (plan's, else 2); "
        "a batch holding every request the server has goes at once",
    )
    p.add_argument("--max-queue", type=int, default=1024, help="requests waiting before 503 (default 1024)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request gets 504 (default 10)"
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="larger bodies get 413 (default 1 MiB)"
    )
    p.add_argument(
        "--drift-window", type=int, default=1000, help="examples in the drift window (default 1000)"
    )
    p.add_argument(
        "--abstain-below",
        type=float,
        metavar="P",
        help="flag 'abstain' on answers whose top probability is under P (selective prediction; counted in /metrics)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=512,
        help="most tokens a /v1/generate request may ask for (default 512)",
    )
    p.add_argument(
        "--max-images",
        type=int,
        default=64,
        help="most images a /v1/generate request may ask of a model that makes images (default 64)",
    )
    p.add_argument("--registry", metavar="DIR", help="the model registry (default $EMBER_REGISTRY)")
    p.set_defaults(func=run_serve)


def register_monitor(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "monitor",
        help="watch a running server: latency, throughput, errors, drift and alerts",
        description="Poll a server's /metrics and /v1/drift and draw a live terminal view.\n\n"
        + MONITOR_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    m.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    m.add_argument(
        "--once", action="store_true", help="print one snapshot (two polls --interval apart) and exit"
    )
    m.add_argument(
        "--fail-on-alert", action="store_true", help="with --once: exit 1 when a drift alert is raised"
    )
    m.set_defaults(func=run_monitor)


# --------------------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace) -> int:
    from ember.deploy.bundle import open_bundle
    from ember.deploy.serve import ServedModel, create_app, load_plan, serve

    bundle = open_bundle(args.model, registry=args.registry)
    plan_path = Path(args.plan) if args.plan else None
    if plan_path is None and Path(args.model).is_file():
        beside = Path(args.model).resolve().parent / "plan.json"
        plan_path = beside if beside.is_file() else None
    if plan_path is not None and not plan_path.is_file():
        raise FileNotFoundError(f"serving plan {plan_path} does not exist; make one with `ember plan`")
    plan = load_plan(plan_path) if plan_path is not None else None
    served = ServedModel.from_bundle(
        bundle, plan=plan, backend=args.backend, plan_folder=plan_path.parent if plan_path else None
    )
    settings = plan or {}
    safety_filter = None
    if args.abstain_below is not None:
        from ember.responsible.selective import abstain_filter

        safety_filter = abstain_filter(args.abstain_below)
    app = create_app(
        served,
        max_batch=args.max_batch or int(settings.get("max_batch", 64)),
        max_wait_ms=args.max_wait_ms
        if args.max_wait_ms is not None
        else float(settings.get("max_wait_ms", 2.0)),
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        max_body_bytes=args.max_body_bytes,
        drift_window=args.drift_window,
        safety_filter=safety_filter,
        max_new_tokens=args.max_new_tokens,
        max_images=args.max_images,
    )
    source = f"plan {plan_path}" if plan_path else "no plan"
    print(
        f"ember serve: {served.name} ({bundle.sha256[:12]}), backend {served.runner.backend} ({source})",
        flush=True,
    )
    serve(app, host=args.host, port=args.port, graceful_timeout_s=args.timeout + 5, announce=_announce)
    print("ember serve: stopped after draining requests in flight", flush=True)
    return 0


def _announce(line: str) -> None:
    print(f"ember serve: {line}", flush=True)


# --------------------------------------------------------------------------- monitor


def run_monitor(args: argparse.Namespace) -> int:
    from ember.errors import UserError

    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"expected a server URL like http://127.0.0.1:8000, got {args.url!r}")
    try:
        model = _get_json(f"{url}/v1/model")
        before = _poll(url)
        if args.once:
            time.sleep(args.interval)
            after = _poll(url)
            view = render(url, model, before, after)
            print(view)
            return 1 if args.fail_on_alert and after["drift"].get("alerts") else 0
        while True:
            time.sleep(args.interval)
            after = _poll(url)
            view = render(url, model, before, after)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(view, flush=True)
            before = after
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise UserError(f"cannot reach {url}: {getattr(e, 'reason', e)}; is `ember serve` running?") from None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def _poll(url: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return {"time": time.monotonic(), "samples": samples, "drift": _get_json(f"{url}/v1/drift")}


def _total(poll: dict[str, Any], name: str, **labels: str) -> float:
    rows = poll["samples"].get(name, [])
    return sum(v for lab, v in rows if all(lab.get(k) == want for k, want in labels.items()))


def _buckets(poll: dict[str, Any], name: str) -> list[tuple[float, float]]:
    rows = poll["samples"].get(f"{name}_bucket", [])
    return sorted((float(lab["le"]), v) for lab, v in rows)


def histogram_quantile(
    q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> float:
    """Prometheus's ``histogram_quantile`` over the increase between two cumulative bucket lists."""
    old = dict(before)
    rows = [(le, count - old.get(le, 0.0)) for le, count in after]
    if not rows or rows[-1][1] <= 0:
        return math.nan
    rank = q * rows[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in rows:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 0.0
            return prev_le + (le - prev_le) * share
        prev_le, prev_count = le, count
    return prev_le


def render(url: str, model: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> str:
    """The terminal view of the change between two polls."""
    dt = max(after["time"] - before["time"], 1e-9)

    def rate(name: str, **labels: str) -> float:
        return (_total(after, name, **labels) - _total(before, name, **labels)) / dt

    def ms(seconds: float) -> str:
        return "-" if math.isnan(seconds) else f"{seconds * 1e3:.2f} ms"

    lat_b, lat_a = (
        _buckets(before, "ember_request_latency_seconds"),
        _buckets(after, "ember_request_latency_seconds"),
    )
    batches = _total(after, "ember_batch_size_count") - _total(before, "ember_batch_size_count")
    items = _total(after, "ember_batch_size_sum") - _total(before, "ember_batch_size_sum")
    errors = {lab["kind"]: v for lab, v in after["samples"].get("ember_errors_total", []) if v > 0}
    flags = {lab["flag"]: v for lab, v in after["samples"].get("ember_safety_flags_total", []) if v > 0}
    lines = [
        f"ember monitor  {url}  model {model.get('name')} ({model.get('backend')}, "
        f"sha256 {str(model.get('sha256') or '-')[:12]})  {time.strftime('%H:%M:%S')}",
        f"traffic   {rate('ember_requests_total', endpoint='predict', code='200'):8.1f} req/s"
        f"   {rate('ember_items_total'):8.1f} items/s"
        f"   in flight {_total(after, 'ember_in_flight_requests'):.0f}   queue {_total(after, 'ember_queue_depth'):.0f}",
        f"latency   p50 {ms(histogram_quantile(0.5, lat_b, lat_a))}   p90 {ms(histogram_quantile(0.9, lat_b, lat_a))}"
        f"   p99 {ms(histogram_quantile(0.99, lat_b, lat_a))}   (last {dt:.1f} s)",
        f"batches   {batches / dt:8.1f} /s   mean size {items / batches if batches else 0:.1f}"
        f"   model p50 {ms(histogram_quantile(0.5, _buckets(before, 'ember_batch_latency_seconds'), _buckets(after, 'ember_batch_latency_seconds')))}",
        f"errors    {sum(rate('ember_errors_total', kind=k) for k in errors):8.2f} /s   total "
        + (", ".join(f"{k} {v:.0f}" for k, v in sorted(errors.items())) or "none"),
        "safety    flags " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(flags.items())) or "none"),
    ]
    lines += _drift_lines(after["drift"])
    return "\n".join(lines)


def _drift_lines(d: dict[str, Any]) -> list[str]:
    if not d.get("enabled"):
        return [f"drift     off ({d.get('reason', 'no reference profile')})"]
    mmd = d.get("embedding_mmd2")
    pred = d.get("prediction_psi")
    lines = [
        f"drift     window {d['window']}   score {d['drift_score']:.3f}"
        + (f"   embedding MMD^2 {mmd:.4f} (p {d['embedding_mmd_pvalue']:.3f})" if mmd is not None else "")
        + (f"   prediction PSI {pred:.3f}" if pred is not None else "")
    ]
    ranked = sorted(zip(d["feature_psi"], d["feature_names"]), reverse=True)[:3]
    if ranked:
        lines.append("          top PSI: " + ", ".join(f"{name} {value:.3f}" for value, name in ranked))
    if d.get("prediction_hist"):
        lines.append("          predicted classes: " + " ".join(f"{p:.2f}" for p in d["prediction_hist"]))
    lines += [f"ALERT     {a}" for a in d.get("alerts", [])]
    return lines
