"""``ember generate``: continue a prompt with a trained language model, streaming to the terminal."""

from __future__ import annotations

import argparse
import sys
import time

HELP = """Continue a prompt with a trained language-model run (its tokenizer.json and final weights).

Text streams to stdout as it is decoded; the speed goes to stderr. Sampling is seeded (--seed), so a
command gives the same text twice.

examples:
  ember generate latest --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-p 0.95
  ember generate RUN --prompt "def fibonacci(n):" --stop "\\ndef " --stop "\\nclass "
  ember generate RUN --prompt "To be" --greedy
  ember generate RUN --prompt "Dear" --safety mask --blocklist words.txt

Safety (--safety, default flag): the prompt is checked for prompt-injection and jailbreak patterns,
the generated text against a blocklist, content patterns and personal data. flag reports what was
found on stderr; mask replaces blocklisted words and personal data; block withholds a flagged text
(and refuses a flagged prompt), exiting 1; off checks nothing.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a trained language model",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run id, unique prefix, or 'latest'")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ember.decoding import generate_text
    from ember.recipe import load_language_model
    from ember.train.precision import resolve_device, resolve_precision

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
    model, tokenizer, _ = load_language_model(args.run, runs_dir=args.runs_dir)
    device = resolve_device("auto")
    model.to(device)
    precision = resolve_precision(args.precision, device)
    stop = [_unescape(s) for s in args.stop]
    generator = torch.Generator(device=device).manual_seed(args.seed)
    stream = safety is None or safety.action == "flag"  # mask and block must see the whole text first
    counter = _Counter(stream)
    prompt = _unescape(args.prompt)
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
