"""``ember compress`` (int8 / pruning / distillation of a run, measured) and ``ember plan`` (serving plan):
argument parsing and printing; the pipelines are `ember.deploy.compress` and `ember.deploy.planning`
with `ember.deploy.placement`.

``ember compress RUN --try int8,prune,distill`` builds every variant the techniques give, then
measures each on this machine: the metric the run's task protects, size, latency p50/p99
at batch 1 and 64 against the fp32 model, the variants taking turns. It prints the table with the
Pareto front and calls a variant *better* only when it is faster here at every batch size.

``ember plan REF --p99-ms 20`` measures the backends, thread counts and batch sizes for a run or a
bundle and writes the serving plan (``plan.json``) that ``ember serve --plan`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMPRESS_HELP = """Compress a finished run and measure every variant on this machine.

Techniques (--try, comma-separated):
  int8     torch dynamic int8 (Linear/LSTM), ONNX Runtime dynamic int8, ONNX Runtime static int8
           (calibrated on training inputs); ONNX Runtime fp32 is measured too, to separate the runtime
           from the quantization
  prune    magnitude pruning (zeros, no speed-up on dense kernels) and channel pruning (channels
           removed, then fine-tuned with the run's own recipe)
  distill  a smaller student of the same family (half the width, or --student NAME) trained on the
           run's teacher with the KD loss

examples:
  ember compress latest --try int8
  ember compress digits-cnn-2026 --try int8,prune,distill --amount 0.5 --epochs 3
"""

PLAN_HELP = """Benchmark a model on the backends available here and write the serving plan.

Backends: eager, compiled (torch.compile), bf16 and compiled-bf16 (a bfloat16 copy, float32 in and
out), int8-dynamic (torch), onnxruntime and onnxruntime-int8 (each local ONNX Runtime execution
provider). Each is checked against eager on held-out data (fp32: max abs error <= 1e-4; bf16:
relative error <= 2% and, on a classifier, accuracy loss <= 0.5 point; int8: accuracy loss <= 0.5
point), then timed at every thread count and batch size, taking turns with eager. A backend is
chosen only when it is faster than eager at every batch size; the plan takes the best throughput
whose p99 (plus the batching wait) meets --p99-ms.

examples:
  ember plan latest --p99-ms 20
  ember plan digits-cnn@3 --p99-ms 20 --out plan.json
  ember plan runs/digits.ember --backends eager,onnxruntime-int8 --threads 1 --batch-sizes 1,64
  ember plan latest --backends bf16,compiled-bf16      # eager is always measured beside them
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="int8 / prune / distill a run; measure accuracy, size and latency",
        description=COMPRESS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("--try", dest="techniques", default="int8,prune,distill", help="techniques (default all)")
    p.add_argument("--amount", type=float, default=0.5, help="fraction pruned (default 0.5)")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning / distillation epochs (default 3)")
    p.add_argument("--student", metavar="MODEL", help="zoo model for the student (default: half width)")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the teacher's term (default 0.9)")
    p.add_argument(
        "--limit", type=int, default=1000, help="held-out examples each variant is scored on (default 1000)"
    )
    _timing_args(p, threads="1")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=compress)


def register_plan(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "plan",
        help="benchmark backends/threads/batch sizes here and write the serving plan",
        description=PLAN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "ref", help="a run (id, prefix, 'latest'), a bundle file, or a registry reference (name@3)"
    )
    q.add_argument("--p99-ms", type=float, help="latency budget of one request in ms")
    q.add_argument("--memory-mb", type=float, help="budget for the weights as stored, in MB")
    q.add_argument("--backends", help="comma-separated subset of the backends (default: all available)")
    q.add_argument("--batch-sizes", default="1,8,64", help="batch sizes to time (default 1,8,64)")
    _timing_args(q, threads="1,2")
    q.add_argument(
        "--out", metavar="FILE", help="plan file (default: plan.json in the run folder / beside the bundle)"
    )
    q.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    q.add_argument("--registry", metavar="DIR", help="the model registry (default $EMBER_REGISTRY)")
    q.add_argument("--json", action="store_true", help="print the plan as JSON")
    q.set_defaults(func=plan)


def _timing_args(p: argparse.ArgumentParser, *, threads: str) -> None:
    p.add_argument("--threads", default=threads, help=f"intra-op thread counts (default {threads})")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds, variants taking turns (default 5)")
    p.add_argument("--round-s", type=float, default=0.2, help="seconds per variant per round (default 0.2)")


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--{what} takes comma-separated integers like 1,8,64; got '{text}'") from None
    if not values or min(values) < 1:
        raise ValueError(f"--{what} needs positive integers, got '{text}'")
    return values


# --------------------------------------------------------------------------- compress


def compress(args: argparse.Namespace) -> int:
    from ember.cli._format import table
    from ember.deploy.compress import compress_run

    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    log = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = compress_run(
        args.run, techniques, amount=args.amount, epochs=args.epochs, student=args.student,
        temperature=args.temperature, alpha=args.alpha, threads=_ints(args.threads, "threads")[0],
        rounds=args.rounds, round_s=args.round_s, limit=args.limit, runs_dir=args.runs_dir, log=log,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    points = result.metric == "accuracy"
    rows = []
    for r in result.variants:
        one, big = r.latency[1], r.latency[64]
        shown = None if r.score is None else (f"{100 * r.score:.2f}" if points else f"{r.score:.4g}")
        rows.append(
            [
                ("* " if r.pareto else "  ") + r.variant, shown, f"{r.size_bytes / 1024:.1f}",
                f"{one.p50_ms:.3f}", f"{one.p99_ms:.3f}", f"{big.p50_ms:.2f}", f"{big.p99_ms:.2f}",
                f"{one.ratio:.2f}x", f"{big.ratio:.2f}x", r.verdict,
            ]
        )  # fmt: skip
    metric = "acc %" if points else result.metric
    head = [
        "variant", metric, "KiB", "p50@1 ms", "p99@1", "p50@64 ms", "p99@64", "vs fp32 @1", "@64", "verdict",
    ]  # fmt: skip
    better = "higher" if result.mode == "max" else "lower"
    print(
        f"run {result.run_id}: {result.metric} ({better} is better) on {result.examples} held-out examples, "
        f"{result.threads} thread(s); * = Pareto front"
    )
    print(table(head, rows))
    for name, why in result.skipped.items():
        print(f"skipped {name}: {why}")
    for name, run_id in result.runs.items():
        print(f"{name} was trained in run {run_id}")
    print(f"wrote {result.path}")
    return 0


# --------------------------------------------------------------------------- plan


def plan(args: argparse.Namespace) -> int:
    from ember.cli._format import table
    from ember.deploy.placement import BF16_BACKENDS
    from ember.deploy.placement import plan as make_plan
    from ember.deploy.planning import plan_inputs

    got = plan_inputs(args.ref, runs_dir=args.runs_dir, registry=args.registry)
    model, example, heldout, calibration, default_out, what = (
        got.model, got.example, got.heldout, got.calibration, got.default_out, got.what,
    )  # fmt: skip
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    log = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = make_plan(
        model,
        example,
        p99_ms=args.p99_ms,
        memory_mb=args.memory_mb,
        backends=backends,
        threads=_ints(args.threads, "threads"),
        batch_sizes=_ints(args.batch_sizes, "batch-sizes"),
        heldout=heldout,
        calibration=calibration,
        rounds=args.rounds,
        round_s=args.round_s,
        log=log,
    )
    out = result.save(Path(args.out) if args.out else default_out)
    if args.json:
        print(json.dumps(json.loads(out.read_text()), indent=2))
        return 0
    rows = [
        [
            m["backend"],
            m["threads"],
            m["batch_size"],
            f"{m['p50_ms']:.3f}",
            f"{m['p99_ms']:.3f}",
            f"{m['ratio_to_eager']:.2f}x",
        ]
        for m in result.measurements
    ]
    print(
        f"{what}: measured on this machine ({result.machine.get('cpu') or 'CPU'}, {result.machine.get('cpus')} cores)"
    )
    print(table(["backend", "threads", "batch", "p50 ms", "p99 ms", "vs eager"], rows))
    for name, q in result.quality.items():
        extra = f", relative error {q['relative_error']:.2g}" if name in BF16_BACKENDS else ""
        extra += f", accuracy drop {100 * q['accuracy_drop']:.2f} pt" if "accuracy_drop" in q else ""
        extra += f", top-1 agreement {100 * q['agreement']:.2f}%" if "agreement" in q else ""
        status = "ok" if q["ok"] else f"rejected: {q['reason']}"
        print(f"  {name}: max abs error {q['max_abs_error']:.3g}{extra}, {q['size_mb']:.2f} MB; {status}")
    for key, why in result.rejected.items():
        if key not in result.quality:
            print(f"  {key}: {why}")
    precision = " ".join(p for p in (result.precision, result.quantization) if p)  # "int8 static", "bf16"
    print(
        f"plan: {result.backend} ({precision}), {result.threads} thread(s), max_batch "
        f"{result.max_batch}, max_wait_ms {result.max_wait_ms}, p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms"
    )
    print(f"  because {result.reason}")
    print(f"wrote {out}")
    return 0
