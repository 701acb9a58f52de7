"""``ember generate``: samples from a trained run — images from a generative run (a PNG grid), text
from a language model (streamed to the terminal) — and ``ember caption``: a phrase for a picture.

Which path a run takes depends on what its task can do (``sample``, ``caption``), not on its name.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.generative.runs import Loaded

HELP = """Sample from a trained run.

A generative run (VAE, GAN, diffusion) writes a PNG grid of images (-o). Sampling is seeded (--seed),
so a command gives the same images twice. A class-conditional or text-conditioned model takes --class
(an id or a class name) or --prompt; a diffusion model takes its sampler's options.

A language-model run continues --prompt (its tokenizer.json and final weights): text streams to stdout
as it is decoded, the speed goes to stderr.

examples:
  ember generate RUN --n 64 -o vae.png
  ember generate RUN --interpolate 3,8 -o morph.png                 # a VAE's latent interpolation
  ember generate RUN --reconstruct -n 32 -o recon.png               # held-out images, reconstructed
  ember generate RUN --class 7 --sampler ddim --steps 50 --guidance 3 -o sevens.png
  ember generate RUN --class all -n 80 --guidance 3 -o digits.png  # a column per class
  ember generate RUN --prompt "a seven written by hand" --guidance 3 -o seven.png
  ember generate latest --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-p 0.95
  ember generate RUN --prompt "def fibonacci(n):" --stop "\\ndef " --stop "\\nclass "
  ember generate RUN --prompt "To be" --greedy
  ember generate RUN --prompt "Dear" --safety mask --blocklist words.txt

Safety (--safety, default flag): the prompt is checked for prompt-injection and jailbreak patterns,
the generated text against a blocklist, content patterns and personal data. flag reports what was
found on stderr; mask replaces blocklisted words and personal data; block withholds a flagged text
(and refuses a flagged prompt), exiting 1; off checks nothing.
"""

CAPTION_HELP = """Write a phrase for each picture with a trained captioning run (its task can caption).

Pictures are converted to the run's channels and resized to its image size.

examples:
  ember caption RUN boot.png
  ember caption latest a.png b.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample images from a generative run, or continue a prompt with a language model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
    p.add_argument(
        "--prompt", help="text to continue (language model; default a newline) or to draw (text-conditioned)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    images = p.add_argument_group("images (generative runs)")
    images.add_argument("-n", "--n", type=int, default=64, help="images to make (default 64)")
    images.add_argument(
        "-o", "--output", default="samples.png", help="the PNG grid to write (default samples.png)"
    )
    images.add_argument(
        "--class",
        dest="label",
        metavar="CLASS",
        help="the class to draw: an id or a class name; 'all' cycles through the classes (a column each)",
    )
    images.add_argument(
        "--interpolate", metavar="A,B", help="a VAE's latent path from a test image of class A to one of B"
    )
    images.add_argument(
        "--reconstruct", action="store_true", help="an autoencoder's reconstructions under held-out images"
    )
    images.add_argument("--nrow", type=int, default=0, help="images a row in the grid (default: a square)")
    images.add_argument("--sampler", choices=["ddpm", "ddim"], help="diffusion sampler (default ddim)")
    images.add_argument("--steps", type=int, help="diffusion steps (default: 50 for ddim, all for ddpm)")
    images.add_argument(
        "--eta", type=float, help="DDIM noise: 0 deterministic (default), 1 the DDPM variance"
    )
    images.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 1: none)")
    images.add_argument("--batch-size", type=int, default=250, help="images made at once (default 250)")
    text = p.add_argument_group("text (language-model runs)")
    text.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add at most (default 200)")
    text.add_argument(
        "--temperature", type=float, default=1.0, help="> 0; lower is more conservative (0: greedy)"
    )
    text.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    text.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: smallest set reaching p (1: all)"
    )
    text.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (CTRL)")
    text.add_argument("--greedy", action="store_true", help="always take the most likely token")
    text.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)"
    )
    text.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    text.add_argument(
        "--precision", default="fp32", choices=["auto", "fp32", "bf16"], help="autocast while decoding"
    )
    text.add_argument(
        "--safety",
        default="flag",
        choices=["off", "flag", "mask", "block"],
        help="content safety (default flag)",
    )
    text.add_argument(
        "--blocklist", metavar="FILE", help="words to flag, one per line (default: a short built-in list)"
    )
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    from ember.generative.runs import task_of

    task, _ = task_of(args.run, runs_dir=args.runs_dir)
    if callable(getattr(task, "sample", None)):
        return generate_images(args)
    return continue_text(args)


def sampler_options(args: argparse.Namespace) -> dict[str, object]:
    """The sampler options given on the command line (the task's defaults for the rest)."""
    given = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "guidance": args.guidance}
    return {k: v for k, v in given.items() if v is not None}


def generate_images(args: argparse.Namespace) -> int:
    import torch

    from ember.cli import UserError
    from ember.generative.images import save_grid
    from ember.generative.runs import load, parse_class
    from ember.generative.score import check_options, sample_in_batches
    from ember.tasks.generative import balanced_labels

    if args.n < 1:
        raise UserError(f"--n must be at least 1; got {args.n}")
    loaded = load(args.run, runs_dir=args.runs_dir)
    task, model, classes = loaded.task, loaded.model, loaded.prep.bundle.classes
    started = time.perf_counter()
    if args.interpolate:
        if not callable(getattr(task, "interpolate", None)):
            raise UserError(f"run {loaded.record.id}'s task cannot interpolate between images (a VAE's can)")
        images, rows = _interpolation(args, loaded, task, classes)
        nrow: int | None = rows
    elif args.reconstruct:
        if not callable(getattr(task, "reconstruct", None)):
            raise UserError(f"run {loaded.record.id}'s task cannot reconstruct images (an autoencoder's can)")
        images, nrow = _reconstructions(args, loaded, task)
    else:
        options = sampler_options(args)
        check_options(task.sample, options, loaded.record.id)
        labels, nrow = None, args.nrow or None
        if args.label == "all":  # (a model without classes refuses the labels: one clear line)
            count = task.sample_classes(model) or len(classes or [])
            labels, nrow = balanced_labels(args.n, count).to(loaded.device), args.nrow or count
        elif args.label is not None:
            labels = torch.full((args.n,), parse_class(args.label, classes), device=loaded.device)
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


def _interpolation(
    args: argparse.Namespace, loaded: Loaded, task: Any, classes: list[str] | None
) -> tuple[Any, int]:
    """Rows of latent interpolations between held-out images of two classes, 8 steps each."""
    from ember.cli import UserError
    from ember.generative.runs import parse_class

    ends = [part for part in args.interpolate.split(",") if part.strip()]
    if len(ends) != 2:
        raise UserError(f"--interpolate takes two classes, A,B (e.g. 3,8); got '{args.interpolate}'")
    a, b = (parse_class(end, classes) for end in ends)
    prep = loaded.prep
    held = prep.test if prep.test is not None else prep.val
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

    held = loaded.prep.test if loaded.prep.test is not None else loaded.prep.val
    width = max(1, min(8, args.n))
    originals = held.x[: max(width, args.n // 2)].to(loaded.device)
    rebuilt = task.reconstruct(loaded.model, originals)
    rows = [part for pair in zip(originals.split(width), rebuilt.split(width)) for part in pair]
    return torch.cat(rows).cpu(), width


def run_caption(args: argparse.Namespace) -> int:
    from ember.cli import UserError
    from ember.generative.images import read_image
    from ember.generative.runs import load, task_of

    task, record = task_of(args.run, runs_dir=args.runs_dir)
    if not callable(getattr(task, "caption", None)):
        raise UserError(
            f"run {record.id} is a '{type(task).__name__}' run: its task cannot caption images. "
            "Train a captioner: ember train configs/fashion-captioner.yaml"
        )
    loaded = load(args.run, runs_dir=args.runs_dir)
    channels, size = loaded.prep.bundle.input_shape[0], loaded.prep.bundle.input_shape[-1]
    for path in args.images:
        image = read_image(path, channels=channels, size=size)
        print(f"{path}: {loaded.task.caption(loaded.model, image)[0]}")
    return 0


def continue_text(args: argparse.Namespace) -> int:
    import torch

    from ember.decoding import generate_text
    from ember.recipe import load_language_model
    from ember.train.precision import resolve_device, resolve_precision

    prompt = _unescape("\n" if args.prompt is None else args.prompt)
    safety = None
    if args.safety != "off":
        from ember.responsible.content import ContentFilter
        from ember.responsible.prompts import check_prompt

        safety = ContentFilter(blocklist=args.blocklist, action=args.safety)
        injected = check_prompt(prompt)
        if injected and args.safety == "block":
            print(
                f"prompt refused: it matches {', '.join(injected)} (prompt-injection/jailbreak patterns)",
                file=sys.stderr,
            )
            return 1
        if injected:
            print(f"safety: the prompt matches {', '.join(injected)}", file=sys.stderr)
    model, tokenizer, _ = load_language_model(args.run, runs_dir=args.runs_dir)
    device = resolve_device("auto")
    model.to(device)
    precision = resolve_precision(args.precision, device)
    stop = [_unescape(s) for s in args.stop]
    generator = torch.Generator(device=device).manual_seed(args.seed)
    stream = safety is None or safety.action == "flag"  # mask and block must see the whole text first
    counter = _Counter(stream)
    if stream:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    started = time.perf_counter()
    with precision.autocast():
        generate_text(
            model,
            tokenizer,
            prompt,
            max_new_tokens=args.max_new_tokens,
            stop=stop,
            on_text=counter.write,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            greedy=args.greedy,
            use_cache=not args.no_cache,
            eos_id=tokenizer.eos_id,
            generator=generator,
        )
    seconds = time.perf_counter() - started
    if safety is not None:
        verdict = safety.check(counter.text)
        if not stream:
            if verdict.blocked:
                print(f"output withheld: {', '.join(verdict.flags)}", file=sys.stderr)
                return 1
            sys.stdout.write(prompt + (verdict.text or ""))
        if verdict.flags:
            print(f"safety flags: {', '.join(verdict.flags)}", file=sys.stderr)
    sys.stdout.write("\n")
    print(f"[{counter.chars} characters in {seconds:.2f}s]", file=sys.stderr)
    return 0


def _unescape(text: str) -> str:
    """``\\n`` and ``\\t`` as typed on a shell become a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


class _Counter:
    """Keeps and counts streamed text; writes it to stdout at once when ``stream``."""

    def __init__(self, stream: bool = True) -> None:
        self.chars = 0
        self.stream = stream
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def write(self, text: str) -> None:
        if self.stream:
            sys.stdout.write(text)
            sys.stdout.flush()
        self.parts.append(text)
        self.chars += len(text)
