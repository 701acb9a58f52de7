"""``ember compress`` (int8 / pruning / distillation of a run, measured) and ``ember plan`` (serving plan).

``ember compress RUN --try int8,prune,distill`` builds every variant the techniques give (and their
combinations with int8), then measures each on this machine: test accuracy, size, latency p50/p99
at batch 1 and 64 against the fp32 model, the variants taking turns. It prints the table with the
Pareto front and calls a variant *better* only when it is faster here at every batch size.

``ember plan REF --p99-ms 20`` measures the backends, thread counts and batch sizes for a run or a
bundle and writes the serving plan (``plan.json``) that ``ember serve --plan`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

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

Backends: eager, compiled (torch.compile), int8-dynamic (torch), onnxruntime and onnxruntime-int8
(each local ONNX Runtime execution provider). Each is checked against eager on held-out data (fp32:
max abs error <= 1e-4; int8: accuracy loss <= 0.5 point), then timed at every thread count and batch
size, taking turns with eager. A backend is chosen only when it is faster than eager at every batch
size; the plan takes the best throughput whose p99 (plus the batching wait) meets --p99-ms.

examples:
  ember plan latest --p99-ms 20
  ember plan digits-cnn@3 --p99-ms 20 --out plan.json
  ember plan runs/digits.ember --backends eager,onnxruntime-int8 --threads 1 --batch-sizes 1,64
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


# --------------------------------------------------------------------------- data


def _tensors(data: Any, limit: int) -> tuple[Any, Any]:
    """(X, y) tensors of the first ``limit`` examples of a dataset."""
    import torch

    from ember.data import ArrayData

    if isinstance(data, ArrayData):
        return data.x[:limit], data.y[:limit]
    items = [data[i] for i in range(min(limit, len(data)))]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


# --------------------------------------------------------------------------- compress


def compress(args: argparse.Namespace) -> int:
    from ember.cli._format import table
    from ember.deploy import bench
    from ember.recipe import load_run_model

    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    unknown = sorted(set(techniques) - {"int8", "prune", "distill"})
    if unknown:
        raise ValueError(f"unknown technique(s) {', '.join(unknown)}; --try takes int8, prune, distill")
    threads = _ints(args.threads, "threads")[0]
    prep, record = load_run_model(args.run, runs_dir=args.runs_dir)
    held = prep.test if prep.test is not None else prep.val
    if held is None:
        raise ValueError(f"run {record.id} has no test or validation split to measure accuracy on")
    x, y = _tensors(held, 4096)
    calibration, _ = _tensors(prep.train, 512)
    teacher = prep.model.eval()
    workdir = Path(tempfile.mkdtemp(prefix="ember-compress-"))
    log = (lambda line: None) if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    variants, skipped, runs = _variants(
        args, prep, teacher, techniques, calibration, workdir, log, threads, record.folder
    )
    log(
        f"measuring {len(variants)} variants (accuracy on {len(x)} held-out examples, latency at batch 1 and 64)"
    )
    results = bench.compare(
        variants,
        x,
        y,
        baseline="fp32",
        batch_sizes=(1, 64),
        threads=threads,
        rounds=args.rounds,
        round_s=args.round_s,
    )
    report = {
        "run": record.id,
        "threads": threads,
        "variants": [r.to_dict() for r in results],
        "skipped": skipped,
        "runs": runs,
    }
    out = record.folder / "compress.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = []
    for r in results:
        one, big = r.latency[1], r.latency[64]
        rows.append(
            [
                ("* " if r.pareto else "  ") + r.variant,
                None if r.accuracy is None else f"{100 * r.accuracy:.2f}",
                f"{r.size_bytes / 1024:.1f}",
                f"{one.p50_ms:.3f}",
                f"{one.p99_ms:.3f}",
                f"{big.p50_ms:.2f}",
                f"{big.p99_ms:.2f}",
                f"{one.ratio:.2f}x",
                f"{big.ratio:.2f}x",
                r.verdict,
            ]
        )
    head = [
        "variant",
        "acc %",
        "KiB",
        "p50@1 ms",
        "p99@1",
        "p50@64 ms",
        "p99@64",
        "vs fp32 @1",
        "@64",
        "verdict",
    ]
    print(f"run {record.id}: {len(x)} held-out examples, {threads} thread(s); * = Pareto front")
    print(table(head, rows))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    for name, run_id in runs.items():
        print(f"{name} was trained in run {run_id}")
    print(f"wrote {out}")
    return 0


def _variants(
    args: argparse.Namespace,
    prep: Any,
    teacher: Any,
    techniques: list[str],
    calibration: Any,
    workdir: Path,
    log: Any,
    threads: int,
    run_folder: Path,
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    from ember.deploy import distill, prune, quantize

    variants: dict[str, Any] = {"fp32": teacher}
    skipped: dict[str, str] = {}
    runs: dict[str, str] = {}  # variant -> the run that fine-tuned / distilled it
    example = calibration[:8]
    batches = list(calibration.split(64))
    pct = round(100 * args.amount)

    def int8_of(model: Any, name: str) -> None:
        folder = workdir / name
        try:
            variants[f"{name}+int8-static"] = quantize.static_int8(
                model, batches, workdir=folder, threads=threads
            )
        except Exception as e:  # reported, the other variants still run
            skipped[f"{name}+int8-static"] = f"{type(e).__name__}: {e}"

    if "int8" in techniques:
        log("int8: torch dynamic, ONNX Runtime fp32 / dynamic int8 / static int8")
        try:
            variants["int8-dynamic"] = quantize.dynamic_int8(teacher)
        except ValueError as e:
            skipped["int8-dynamic"] = str(e)
        try:
            variants["onnx-fp32"] = quantize.onnx_fp32(
                teacher, example, workdir=workdir / "onnx", threads=threads
            )
            variants["onnx-int8-dynamic"] = quantize.onnx_int8(
                teacher, example, workdir=workdir / "onnx", threads=threads
            )
            variants["onnx-int8-static"] = quantize.static_int8(
                teacher, batches, workdir=workdir / "static", threads=threads
            )
        except Exception as e:  # no onnxruntime, an op it cannot export...
            skipped["onnx"] = f"{type(e).__name__}: {e}"
    if "prune" in techniques:
        log(f"prune: magnitude {pct}%, channels {pct}% + {args.epochs} fine-tuning epochs")
        variants[f"prune-magnitude-{pct}"] = prune.magnitude(teacher, args.amount)
        try:
            small = prune.channels(teacher, args.amount, example)
            # no config describes the pruned shapes, so `ember eval` could not rebuild this run: it goes
            # to a run store inside the original run's folder, where `latest` does not find it
            name = f"{prep.config.name or prep.config.model.name}-pruned{pct}"
            store = str(run_folder / "compress-runs")
            runs[f"prune-channels-{pct}"] = _fit(small, prep.config, prep, args, name, runs_dir=store)
            variants[f"prune-channels-{pct}"] = small.eval()
            if "int8" in techniques:
                int8_of(small.eval(), f"prune-channels-{pct}")
        except ValueError as e:
            skipped[f"prune-channels-{pct}"] = str(e)
    if "distill" in techniques:
        try:
            student, name, student_cfg = _student(prep, args.student)
            log(f"distill: {name} student, {args.epochs} epochs, T={args.temperature}, alpha={args.alpha}")
            task = distill.DistillationTask(teacher, temperature=args.temperature, alpha=args.alpha)
            runs[f"distill-{name}"] = _fit(student, student_cfg, prep, args, f"{name}-distilled", task=task)
            variants[f"distill-{name}"] = student.eval()
            if "int8" in techniques:
                int8_of(student.eval(), f"distill-{name}")
        except ValueError as e:
            skipped["distill"] = str(e)
    return variants, skipped, runs


def _fit(
    model: Any,
    cfg: Any,
    prep: Any,
    args: argparse.Namespace,
    name: str,
    *,
    task: Any = None,
    runs_dir: Any = None,
) -> str:
    """Train ``model`` with ``cfg``'s recipe for ``--epochs``, recorded like a recipe run (with its splits)."""
    from ember.data import save_splits
    from ember.train.trainer import Trainer

    options = {"task": task} if task is not None else {}
    trainer = Trainer(
        model,
        config=cfg,
        epochs=args.epochs,
        name=name,
        runs_dir=runs_dir or args.runs_dir,
        progress=False,
        **options,
    )
    trainer.data_sha256 = prep.data_sha256
    save_splits(prep.splits, trainer.start_run().dir / "splits")
    return trainer.fit(prep.train, prep.val).run_id


def _student(prep: Any, name: str | None) -> tuple[Any, str, Any]:
    """(model, label, config) of the student: ``name`` from the zoo, or the teacher's family at half width."""
    from ember import models
    from ember.config import ModelConfig
    from ember.recipe import build_model

    cfg = prep.config
    if name is not None:
        student_cfg = dataclasses.replace(cfg, model=ModelConfig(name=name, options={}))
        return build_model(student_cfg, prep.bundle), name, student_cfg
    builder = models.registry.get(cfg.model.name)
    params = inspect.signature(builder).parameters
    for key in ("width", "embed_dim", "hidden_size", "dim"):
        if key in params:
            current = cfg.model.options.get(key, params[key].default)
            if isinstance(current, int) and current >= 2:
                options = {**cfg.model.options, key: current // 2}
                student_cfg = dataclasses.replace(
                    cfg, model=ModelConfig(name=cfg.model.name, options=options)
                )
                return (
                    build_model(student_cfg, prep.bundle),
                    f"{cfg.model.name}-{key}{current // 2}",
                    student_cfg,
                )
    raise ValueError(
        f"cannot make a smaller {cfg.model.name} by halving its width; name a student with --student MODEL"
    )


# --------------------------------------------------------------------------- plan


def plan(args: argparse.Namespace) -> int:
    from ember.cli._format import table
    from ember.deploy.placement import plan as make_plan

    model, example, heldout, calibration, default_out, what = _load_for_plan(args)
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
        extra = f", accuracy drop {100 * q['accuracy_drop']:.2f} pt" if "accuracy_drop" in q else ""
        extra += f", top-1 agreement {100 * q['agreement']:.2f}%" if "agreement" in q else ""
        status = "ok" if q["ok"] else f"rejected: {q['reason']}"
        print(f"  {name}: max abs error {q['max_abs_error']:.3g}{extra}, {q['size_mb']:.2f} MB; {status}")
    for key, why in result.rejected.items():
        if key not in result.quality:
            print(f"  {key}: {why}")
    print(
        f"plan: {result.backend} ({result.quantization or 'fp32'}), {result.threads} thread(s), max_batch "
        f"{result.max_batch}, max_wait_ms {result.max_wait_ms}, p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms"
    )
    print(f"  because {result.reason}")
    print(f"wrote {out}")
    return 0


def _load_for_plan(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, Path, str]:
    """(model, example batch, held-out (x, y) or x, calibration x, default plan path, description)."""
    import torch

    from ember.track import RunNotFoundError, RunStore

    path = Path(args.ref)
    if not path.is_file():
        try:
            RunStore(args.runs_dir).get(args.ref)
        except RunNotFoundError:
            pass
        else:
            from ember.recipe import load_run_model

            prep, record = load_run_model(args.ref, runs_dir=args.runs_dir)
            held = prep.test if prep.test is not None else prep.val
            x, y = _tensors(held if held is not None else prep.train, 2048)
            calibration, _ = _tensors(prep.train, 512)
            return (
                prep.model.eval(),
                x[:64],
                (x, y),
                calibration,
                record.folder / "plan.json",
                f"run {record.id}",
            )
    from ember.deploy.bundle import open_bundle

    bundle = open_bundle(args.ref, registry=args.registry)
    default = bundle.path.parent / "plan.json"
    try:  # the bundle's own recipe rebuilds its data and held-out split (same seed)
        from ember.recipe import prepare

        prep = prepare(bundle.config)
        held = prep.test if prep.test is not None else prep.val
        x, y = _tensors(held if held is not None else prep.train, 2048)
        calibration, _ = _tensors(prep.train, 512)
        return bundle.model, x[:64], (x, y), calibration, default, f"bundle {bundle.path}"
    except Exception:  # data not available here: check agreement on synthetic inputs
        low, high = bundle.meta.get("input_range") or (0.0, 1.0)
        g = torch.Generator().manual_seed(0)
        x = low + (high - low) * torch.rand((512, *bundle.input_shape), generator=g)
        return (
            bundle.model,
            x[:64],
            x,
            x,
            default,
            f"bundle {bundle.path} (synthetic inputs: its data is not here)",
        )
