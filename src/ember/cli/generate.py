"""``ember generate``: text from a trained text model (a run or a bundle), streamed to the terminal,
or images from a model whose task makes them (a PNG grid: `ember.cli.generate_images`)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = """Sample from a trained model: a run (id, prefix, 'latest') or a bundle (.ember file, or a
registry reference NAME@VERSION|ALIAS). The model's task decides what comes out.

A model that makes images (VAE, GAN, diffusion) writes a PNG grid (-o). Sampling is seeded (--seed),
so a command gives the same images twice. A class-conditional or text-conditioned model takes --class
(an id or a class name) or --prompt; a diffusion model takes its sampler's options.

A language model continues --prompt, a translator translates it (its tokenizer and final weights do
the decoding).

Text streams to stdout as it is decoded; the speed goes to stderr. Sampling is seeded (--seed), so a
command gives the same text twice. A translator answers with its beam search (sampling options do
not apply to it).

examples:
  ember generate RUN --n 64 -o vae.png
  ember generate RUN --interpolate 3,8 -o morph.png                 # a VAE's latent interpolation
  ember generate RUN --reconstruct -n 32 -o recon.png               # held-out images, reconstructed
  ember generate RUN --class 7 --sampler ddim --steps 50 --guidance 3 -o sevens.png
  ember generate RUN --class all -n 80 --guidance 3 -o digits.png  # a column per class
  ember generate RUN --prompt "a seven written by hand" --guidance 3 -o seven.png
  ember generate digits-ddpm.ember --class 3 -n 16 -o threes.png   # a bundle
  ember generate latest --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-p 0.95
  ember generate RUN --prompt "def fibonacci(n):" --stop "\\ndef " --stop "\\nclass "
  ember generate RUN --prompt "To be" --greedy
  ember generate shakespeare.ember --prompt "ROMEO:"          # a bundle, no run store needed
  ember generate en-es@production --prompt "In the beginning was the Word."
  ember generate RUN --prompt "Dear" --safety mask --blocklist words.txt

Safety (--safety, default flag): the prompt is checked for prompt-injection and jailbreak patterns,
the generated text against a blocklist, content patterns and personal data. flag reports what was
found on stderr; mask replaces blocklisted words and personal data; block withholds a flagged text
(and refuses a flagged prompt), exiting 1; off checks nothing.
"""


def register_caption(sub: argparse._SubParsersAction) -> None:
    from ember.cli.generate_images import register_caption

    register_caption(sub)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample images from a generative model, or continue a prompt with a language model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, 'latest', a bundle file or a registry reference")
    p.add_argument(
        "--prompt", help="text to continue (language model; default a newline) or to draw (text-conditioned)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--registry", metavar="DIR", help="the model registry (default $EMBER_REGISTRY)")
    images = p.add_argument_group("images (generative models)")
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
    text = p.add_argument_group("text (language models, translators)")
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


@dataclass
class TextModel:
    """What sampling takes: the model, its tokenizer (a text model's) and its task."""

    model: Any
    tokenizer: Any
    task: Any
    source: str
    spec: Any = None
    """The model's `ember.tasks.spec.ModelSpec` (its classes, input shape)."""
    run: str | None = None
    """The run's id when the model comes from a run (None: a bundle)."""


def run(args: argparse.Namespace) -> int:
    from ember.cli.generate_images import generate_images
    from ember.tasks import contract

    source = load_text_model(args.run, runs_dir=args.runs_dir, registry=args.registry)
    if contract.makes_images(source.task):
        return generate_images(args, source)
    if args.prompt is None:
        args.prompt = "\n"
    return write_text(source, args)


def load_text_model(ref: str, *, runs_dir: str | None = None, registry: str | None = None) -> TextModel:
    """The model of a run, a bundle file or a registry reference (a run store is looked in first,
    unless ``ref`` is a file or names a registry version ``NAME@...``)."""
    from ember.recipe import load_run
    from ember.track import RunNotFoundError

    if Path(ref).is_file() or ref.endswith(".ember") or "@" in ref:
        return _bundle_model(ref, registry)
    try:
        loaded = load_run(ref, runs_dir=runs_dir, data=False)
    except RunNotFoundError:
        try:
            return _bundle_model(ref, registry)  # a registry name holds it
        except (FileNotFoundError, ValueError):
            pass
        raise
    return TextModel(loaded.model, loaded.tokenizer, loaded.task, f"run {loaded.id}", loaded.spec, loaded.id)


def _bundle_model(ref: str, registry: str | None) -> TextModel:
    from ember.deploy.bundle import open_bundle
    from ember.tasks.spec import NotApplicable

    bundle = open_bundle(ref, registry=registry)
    if bundle.model is None:
        raise NotApplicable(
            f"bundle {bundle.path} carries its model as an ONNX graph only, and text generation runs the "
            "PyTorch model; install the model's code (its entry point) where the bundle is opened"
        )
    return TextModel(bundle.model, bundle.tokenizer, bundle.task, f"bundle {bundle.path}", bundle.spec)


def write_text(source: TextModel, args: argparse.Namespace) -> int:
    """Stream the text ``source``'s task writes for ``args.prompt`` to stdout (the text path)."""
    import torch

    from ember.tasks import contract
    from ember.tasks.spec import NotApplicable
    from ember.train.precision import resolve_device, resolve_precision

    if source.tokenizer is None:
        contract.require(
            source.task, "generate_text", "text generation", contract.NO_TEXT
        )  # the task's own advice first
        raise NotApplicable(f"{source.source} has no tokenizer.json: it is not a text model")
    safety = None
    if args.safety != "off":
        from ember.responsible.content import ContentFilter
        from ember.responsible.prompts import check_prompt

        safety = ContentFilter(blocklist=args.blocklist, action=args.safety)
        injected = check_prompt(_unescape(args.prompt))
        if injected and args.safety == "block":
            print(
                f"prompt refused: it matches {', '.join(injected)} (prompt-injection/jailbreak patterns)",
                file=sys.stderr,
            )
            return 1
        if injected:
            print(f"safety: the prompt matches {', '.join(injected)}", file=sys.stderr)
    device = resolve_device("auto")
    model = source.model.to(device)
    precision = resolve_precision(args.precision, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    prompt = _unescape(args.prompt)
    pieces = contract.generate_text(
        source.task, model, source.tokenizer, prompt,
        max_new_tokens=args.max_new_tokens, stop=[_unescape(s) for s in args.stop],
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, greedy=args.greedy, use_cache=not args.no_cache,
        generator=generator,
    )  # fmt: skip
    stream = safety is None or safety.action == "flag"  # mask and block must see the whole text first
    counter = _Counter(stream)
    answers = contract.answers_prompt(source.task)  # a translator answers; a language model continues
    shown = "" if answers else prompt
    if stream:
        sys.stdout.write(shown)
        sys.stdout.flush()
    started = time.perf_counter()
    with precision.autocast():
        for piece in pieces:
            counter.write(piece)
    seconds = time.perf_counter() - started
    if safety is not None:
        verdict = safety.check(counter.text)
        if not stream:
            if verdict.blocked:
                print(f"output withheld: {', '.join(verdict.flags)}", file=sys.stderr)
                return 1
            sys.stdout.write(shown + (verdict.text or ""))
        if verdict.flags:
            print(f"safety flags: {', '.join(verdict.flags)}", file=sys.stderr)
    sys.stdout.write("\n")
    sys.stdout.flush()  # before the speed line on stderr
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
