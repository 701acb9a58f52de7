"""GPT training throughput: ember (Trainer + GPT + LMLoader) against a plain nanoGPT loop, fp32 and bf16.

The same shape on both sides (4 layers, 4 heads, 256 wide, context 256, batch 16, vocabulary 65 as
nanoGPT's shakespeare_char), the same AdamW (lr 1e-3, betas (0.9, 0.95), weight decay 0.1 on
matrices only, PyTorch's default implementation), random windows of the same token stream:

- ``plain``: nanoGPT's ``model.py`` (copied below, trimmed to what training runs) and its training
  loop (``get_batch`` of random windows, ``torch.autocast`` for bf16, forward, backward, step);
- ``ember``: ``ember.models.create("gpt")`` trained by ``ember.Trainer`` (task ``language_model``)
  from an ``LMLoader`` over a ``TokenChunks`` split: the path ``ember train`` takes, run store,
  finite-loss checks and its epoch-end checkpoint included.

Each variant trains ``N1`` and ``N2`` steps from a fresh model; its time per step is the marginal
``(t(N2) - t(N1)) / (N2 - N1)``, so one-off costs (building, the first steps' warm-up, the
checkpoint) cancel. Variants take turns, the order rotated each round, and ratios are medians over
rounds of that round's ratio. tokens/s = batch * context / time per step.

The same run also times a large bf16 matmul (the machine's practical bf16 peak) and reports the
model FLOP/s of each bf16 variant as a fraction of it, and the fp32 matmul peak beside it: their
ratio bounds what bf16 can gain over fp32 in training, where matmuls are most of the work. Model
FLOPs are nanoGPT's ``estimate_mfu`` count, ``6 N + 12 L H Q T`` per token (N: weights without the
position table).

Usage:
    python benchmarks/gpt_train.py                      # 2 threads, fp32 and bf16, 5 rounds
    python benchmarks/gpt_train.py --rounds 3 --steps 3,11 --precisions bf16
    python benchmarks/gpt_train.py --compile            # also both loops under torch.compile

With ``--compile`` each loop also runs compiled (``model.compile()`` in the plain loop, as nanoGPT's
``compile=True``; ``compile=True`` for ember): the compiled ember is compared with the compiled plain
loop. A fresh model is compiled in every call; the marginal time per step leaves the compile out.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import _common
import torch
import torch.nn.functional as F
from torch import nn

import ember
from ember.data.text import LMLoader, TokenChunks

LAYERS, HEADS, WIDTH, BLOCK, BATCH, VOCAB = 4, 4, 256, 256, 16, 65
LR, BETAS, DECAY = 1e-3, (0.9, 0.95), 0.1


# --------------------------------------------------------------------------- nanoGPT (MIT, Karpathy)


class LayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_attn = nn.Linear(WIDTH, 3 * WIDTH)
        self.c_proj = nn.Linear(WIDTH, WIDTH)
        self.resid_dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(WIDTH, dim=2)
        k = k.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        q = q.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        v = v.view(B, T, HEADS, C // HEADS).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(WIDTH, 4 * WIDTH)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * WIDTH, WIDTH)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(WIDTH, bias=True)
        self.attn = CausalSelfAttention()
        self.ln_2 = LayerNorm(WIDTH, bias=True)
        self.mlp = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(VOCAB, WIDTH),
                wpe=nn.Embedding(BLOCK, WIDTH),
                drop=nn.Dropout(0.0),
                h=nn.ModuleList([Block() for _ in range(LAYERS)]),
                ln_f=LayerNorm(WIDTH, bias=True),
            )
        )
        self.lm_head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * LAYERS))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def nanogpt_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS)


# --------------------------------------------------------------------------- the variants

DATA = torch.randint(0, VOCAB, (2_000_000,), generator=torch.Generator().manual_seed(0), dtype=torch.int32)


def run_plain(steps: int, precision: str, tmp: Path, compile: bool = False) -> None:
    torch.manual_seed(0)
    model = NanoGPT()
    if compile:
        model.compile()  # as nanoGPT's train.py does with compile=True
    optimizer = nanogpt_optimizer(model)
    model.train()
    for _ in range(steps):
        ix = torch.randint(len(DATA) - BLOCK, (BATCH,))  # nanoGPT's get_batch
        x = torch.stack([DATA[i : i + BLOCK].long() for i in ix])
        y = torch.stack([DATA[i + 1 : i + 1 + BLOCK].long() for i in ix])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def run_ember(steps: int, precision: str, tmp: Path, compile: bool = False) -> None:
    torch.manual_seed(0)
    model = ember.models.create(
        "gpt", vocab_size=VOCAB, block_size=BLOCK, num_layers=LAYERS, num_heads=HEADS, embed_dim=WIDTH
    )
    loader = LMLoader(
        TokenChunks(DATA, chunk_size=16 * BLOCK),
        batch_size=BATCH,
        block_size=BLOCK,
        shuffle=True,
        windows_per_epoch=steps * BATCH,
    )
    trainer = ember.Trainer(
        model,
        task="language_model",
        optimizer="adamw",
        lr=LR,
        betas=BETAS,
        weight_decay=DECAY,
        epochs=1,
        precision=precision,
        compile=compile,
        runs_dir=tmp / "runs",
        progress=False,
    )
    trainer.fit(loader)


RUNNERS: dict[str, Callable[..., None]] = {"plain": run_plain, "ember": run_ember}


CLOCK = time.perf_counter  # --clock cpu: time.process_time, blind to time spent waiting for a core


def timed(variant: str, steps: int, precision: str, tmp: Path) -> float:
    gc.collect()
    name, _, compiled = variant.partition("+")
    start = CLOCK()
    RUNNERS[name](steps, precision, tmp, compile=bool(compiled))
    return CLOCK() - start


def matmul_peak(seconds: float = 2.0, n: int = 2048, dtype: torch.dtype = torch.bfloat16) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` over ``seconds`` (the practical peak)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = CLOCK()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / max(CLOCK() - start, 1e-9))
    return best


def flops_per_token() -> float:
    """nanoGPT's estimate_mfu count: 6 N + 12 L H Q T (N without the position table)."""
    model = NanoGPT()
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * LAYERS * HEADS * (WIDTH // HEADS) * BLOCK


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", default="4,16", help="N1,N2 steps (marginal time per step between them)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cpu: process CPU time (for a shared machine)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time both loops compiled by torch.compile (plain+compile, ember+compile)",
    )
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    n1, n2 = (int(v) for v in args.steps.split(","))
    precisions = args.precisions.split(",")
    warnings.filterwarnings("ignore")
    _common.set_threads(args.threads)
    print(_common.machine())
    variants = list(RUNNERS) + ([f"{v}+compile" for v in RUNNERS] if args.compile else [])
    per_step: dict[tuple[str, str], list[float]] = {(v, p): [] for v in variants for p in precisions}
    peaks: list[float] = []
    fp32_peaks: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for v in variants:  # untimed warm-up: imports, lazy initialization, oneDNN kernel caches
            for p in precisions:
                timed(v, 2, p, tmp)
        for r in range(args.rounds):
            for name in _common.rotate([f"{v}/{p}" for p in precisions for v in variants], r):
                variant, precision = name.split("/")
                t1 = timed(variant, n1, precision, tmp)
                t2 = timed(variant, n2, precision, tmp)
                per_step[(variant, precision)].append((t2 - t1) / (n2 - n1))
            if "bf16" in precisions:
                peaks.append(matmul_peak())
                fp32_peaks.append(matmul_peak(dtype=torch.float32))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    tokens = BATCH * BLOCK
    rows = []
    for (variant, precision), times in per_step.items():
        base = per_step[("plain+compile" if variant.endswith("+compile") else "plain", precision)]
        ratio = [b / t for t, b in zip(times, base)]  # throughput ratio to the same plain loop
        row = [
            variant,
            precision,
            f"{tokens / _common.median(times):,.0f}",
            f"{_common.median(times) * 1e3:.0f}",
            f"{_common.median(ratio):.3f}x",
            _common.spread(ratio),
        ]
        if precision == "bf16" and "fp32" in precisions:
            speedup = [f / b for b, f in zip(times, per_step[(variant, "fp32")])]
            row.append(f"{_common.median(speedup):.2f}x")
        else:
            row.append("-")
        if precision == "bf16":
            util = [tokens / t * flops_per_token() / peak for t, peak in zip(times, peaks)]
            row.append(f"{_common.median(util):.0%}")
        else:
            row.append("-")
        rows.append(row)
    header = [
        "variant",
        "precision",
        "tokens/s",
        "ms/step",
        "vs plain",
        "range",
        "bf16 vs fp32",
        "of bf16 peak",
    ]
    print()
    print(
        f"GPT {LAYERS} layers x {HEADS} heads x {WIDTH} wide, context {BLOCK}, batch {BATCH}, "
        f"{args.threads} threads, steps {n1} and {n2}, {args.rounds} rounds; "
        f"bf16 matmul peak {_common.median(peaks) / 1e9:,.0f} GFLOP/s, fp32 {_common.median(fp32_peaks) / 1e9:,.0f} "
        f"(bf16/fp32 matmul ratio {_common.median([b / f for b, f in zip(peaks, fp32_peaks)]):.2f}x: "
        "the ceiling for bf16-vs-fp32 training speed-up)"
        if peaks
        else ""
    )
    print(_common.table(header, rows))


if __name__ == "__main__":
    main()
