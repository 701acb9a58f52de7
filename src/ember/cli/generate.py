"""``ember generate``: text from a trained text model (a run or a bundle), streamed to the terminal."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = """Continue a prompt with a trained language model, or translate it with a translator: a run
(id, prefix, 'latest') or a bundle (.ember file, or a registry reference NAME@VERSION|ALIAS). The
model's task decides what the text is (its tokenizer and final weights do the decoding).

Text streams to stdout as it is decoded; the speed goes to stderr. Sampling is seeded (--seed), so a
command gives the same text twice. A translator answers with its beam search (sampling options do
not apply to it).

examples:
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a trained language model (or translate it)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, 'latest', a bundle file or a registry reference")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add at most (default 200)")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="> 0; lower is more conservative (0: greedy)"
    )
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: smallest set reaching p (1: all)"
    )
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (CTRL)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    p.add_argument(
        "--precision", default="fp32", choices=["auto", "fp32", "bf16"], help="autocast while decoding"
    )
    p.add_argument(
        "--safety",
        default="flag",
        choices=["off", "flag", "mask", "block"],
        help="content safety (default flag)",
    )
    p.add_argument(
        "--blocklist", metavar="FILE", help="words to flag, one per line (default: a short built-in list)"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--registry", metavar="DIR", help="the model registry (default $EMBER_REGISTRY)")
    p.set_defaults(func=run)


@dataclass
class TextModel:
    """What writing text takes: the model, its tokenizer and its task."""

    model: Any
    tokenizer: Any
    task: Any
    source: str


def run(args: argparse.Namespace) -> int:
    return write_text(load_text_model(args.run, runs_dir=args.runs_dir, registry=args.registry), args)


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
    return TextModel(loaded.model, loaded.tokenizer, loaded.task, f"run {loaded.id}")


def _bundle_model(ref: str, registry: str | None) -> TextModel:
    from ember.deploy.bundle import open_bundle
    from ember.tasks.spec import NotApplicable

    bundle = open_bundle(ref, registry=registry)
    if bundle.model is None:
        raise NotApplicable(
            f"bundle {bundle.path} carries its model as an ONNX graph only, and text generation runs the "
            "PyTorch model; install the model's code (its entry point) where the bundle is opened"
        )
    return TextModel(bundle.model, bundle.tokenizer, bundle.task, f"bundle {bundle.path}")


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
