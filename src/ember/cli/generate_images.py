"""``ember generate`` for a model whose task makes images (a PNG grid), and ``ember caption``.

Which path a run takes depends on what its task can do (`ember.tasks.contract.makes_images`, a
``caption`` member), never on its family's name. A bundle samples too; interpolation and
reconstruction take held-out images, so they need the run.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.cli.generate import TextModel
    from ember.generative.runs import Loaded

CAPTION_HELP = """Write a phrase for each picture with a trained captioning run (its task can caption).

Pictures are converted to the run's channels and resized to its image size.

examples:
  ember caption RUN boot.png
  ember caption latest a.png b.png
"""


def register_caption(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="write a phrase for pictures with a captioning run",
        description=CAPTION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="picture files (PNG, JPEG ...)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.set_defaults(func=run_caption)


def sampler_options(args: argparse.Namespace) -> dict[str, object]:
    """The sampler options given on the command line (the task's defaults for the rest)."""
    given = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "guidance": args.guidance}
    return {k: v for k, v in given.items() if v is not None}


def generate_images(args: argparse.Namespace, source: TextModel) -> int:
    """Write the PNG grid of images ``source``'s task makes (``ember generate`` on an image model)."""
    import torch

    from ember.errors import UserError
    from ember.generative.images import save_grid
    from ember.generative.runs import parse_class
    from ember.generative.score import check_options, sample_in_batches
    from ember.tasks import contract
    from ember.tasks.generative import balanced_labels
    from ember.train.precision import resolve_device

    if args.n < 1:
        raise UserError(f"--n must be at least 1; got {args.n}")
    task, classes = source.task, source.spec.classes if source.spec is not None else None
    started = time.perf_counter()
    nrow: int | None
    if args.interpolate or args.reconstruct:  # held-out images: the run's data
        images, nrow = _from_held_out(args, source)
    else:
        device = resolve_device("auto")
        model = source.model.to(device).eval()
        options = sampler_options(args)
        check_options(task.sample, options, source.source)
        labels, nrow = None, args.nrow or None
        if args.label == "all":  # (a model without classes refuses the labels: one clear line)
            count = contract.image_classes(task, model) or len(classes or [])
            labels, nrow = balanced_labels(args.n, count).to(device), args.nrow or count
        elif args.label is not None:
            labels = torch.full((args.n,), parse_class(args.label, classes), device=device)
        prompts = None if args.prompt is None else [args.prompt] * args.n
        images = sample_in_batches(
            task,
            model,
            args.n,
            labels=labels,
            prompts=prompts,
            seed=args.seed,
            batch_size=args.batch_size,
            **options,
        )
    path = save_grid(images, args.output, nrow=nrow)
    seconds = time.perf_counter() - started
    print(
        f"wrote {path}: {len(images)} images of {tuple(images.shape[1:])} in {seconds:.1f}s (seed {args.seed})"
    )
    return 0


def _from_held_out(args: argparse.Namespace, source: TextModel) -> tuple[Any, int]:
    from ember.errors import UserError
    from ember.generative.runs import load

    if source.run is None:
        raise UserError(
            f"{'--interpolate' if args.interpolate else '--reconstruct'} takes held-out images, which "
            f"{source.source} does not carry; give the run that trained it"
        )
    loaded = load(source.run, runs_dir=args.runs_dir)
    task = loaded.task
    if args.interpolate:
        if not callable(getattr(task, "interpolate", None)):
            raise UserError(f"run {loaded.record.id}'s task cannot interpolate between images (a VAE's can)")
        return _interpolation(args, loaded, task, loaded.run.classes)
    if not callable(getattr(task, "reconstruct", None)):
        raise UserError(f"run {loaded.record.id}'s task cannot reconstruct images (an autoencoder's can)")
    return _reconstructions(args, loaded, task)


def _interpolation(
    args: argparse.Namespace, loaded: Loaded, task: Any, classes: list[str] | None
) -> tuple[Any, int]:
    """Rows of latent interpolations between held-out images of two classes, 8 steps each."""
    from ember.errors import UserError
    from ember.generative.runs import parse_class

    ends = [part for part in args.interpolate.split(",") if part.strip()]
    if len(ends) != 2:
        raise UserError(f"--interpolate takes two classes, A,B (e.g. 3,8); got '{args.interpolate}'")
    a, b = (parse_class(end, classes) for end in ends)
    held = loaded.held_out()
    rows = max(1, min(args.n // 8, 8))
    picked = []
    for label in (a, b):
        index = (held.y == label).nonzero().flatten()[:rows]
        if len(index) < rows:
            raise UserError(f"the held-out split has {len(index)} images of class {label}; need {rows}")
        picked.append(held.x[index].to(loaded.device))
    return task.interpolate(loaded.model, picked[0], picked[1], steps=8), 8


def _reconstructions(args: argparse.Namespace, loaded: Loaded, task: Any) -> tuple[Any, int]:
    """Rows of held-out images, each followed by a row of their reconstructions."""
    import torch

    held = loaded.held_out()
    width = max(1, min(8, args.n))
    originals = held.x[: max(width, args.n // 2)].to(loaded.device)
    rebuilt = task.reconstruct(loaded.model, originals)
    rows = [part for pair in zip(originals.split(width), rebuilt.split(width)) for part in pair]
    return torch.cat(rows).cpu(), width


def run_caption(args: argparse.Namespace) -> int:
    from ember.errors import UserError
    from ember.generative.images import read_image
    from ember.generative.runs import load, task_of

    task, record = task_of(args.run, runs_dir=args.runs_dir)
    if not callable(getattr(task, "caption", None)):
        raise UserError(
            f"run {record.id} is a '{type(task).__name__}' run: its task cannot caption images. "
            "Train a captioner: ember train configs/fashion-captioner.yaml"
        )
    loaded = load(args.run, runs_dir=args.runs_dir)
    shape = loaded.run.spec.inputs.shape
    channels, size = shape[0], shape[-1]
    for path in args.images:
        image = read_image(path, channels=channels, size=size)
        print(f"{path}: {loaded.task.caption(loaded.model, image)[0]}")
    return 0
