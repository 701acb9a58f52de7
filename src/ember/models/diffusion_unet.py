"""A small U-Net that denoises for diffusion (Ho et al., 2020), with class or text conditioning.

``forward(x_t, t, cond)`` maps noisy images (B, C, H, W) at timesteps ``t`` (B,) to (B, C, H, W):
the noise, the velocity or the clean image, whichever the task trains it to predict. The timestep
enters through a sinusoidal embedding and an MLP; each residual block adds it (and the condition's
embedding) to its feature maps. Levels halve the resolution (28 → 14 → 7); self-attention runs at
the levels listed in ``attention``.

Conditioning (``condition``): ``none``; ``class`` — ``cond`` is (B,) class ids, ``num_classes``
meaning "no class" (classifier-free guidance drops labels to it in training); ``text`` — ``cond``
is (B, L) word ids of a `ember.data.phrases.PhraseSet` vocabulary, read by a bag-of-words encoder
(mean of word embeddings, then an MLP); an all-padding row means "no text".

The model keeps an exponential moving average of its network (``ema``, when ``ema_decay`` > 0):
training updates ``net``; ``denoiser()`` — what sampling uses — is the average.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model = create("diffusion_unet_tiny", in_channels=1, image_size=8, condition="class")
    >>> model(torch.randn(2, 1, 8, 8), torch.tensor([3, 999]), torch.tensor([1, 10])).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.phrases import PAD, UNK, PhraseSet, phrase_set
from ember.models._zoo import register_family, register_variant
from ember.nn import MultiHeadSelfAttention, default_groups
from ember.nn.ema import ema_decay, update_ema

__all__ = ["DiffusionModel", "DiffusionUNet", "DiffusionUNetConfig", "PhraseEncoder"]

CONDITIONS = ("none", "class", "text")
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class DiffusionUNetConfig:
    """Shape of a ``DiffusionUNet``."""

    in_channels: int = 1
    """Image channels C (in and out)."""
    image_size: int = 28
    """Image side (unused by the layers, which take any size; kept so every vision builder agrees)."""
    num_classes: int = 10
    """Classes of a class-conditional model (id ``num_classes`` is "no class")."""
    condition: str = "none"
    """``none``, ``class`` (class ids) or ``text`` (phrase word ids)."""
    phrases: str = "digits"
    """The `ember.data.phrases` set whose vocabulary a text-conditioned model reads."""
    width: int = 16
    """Channels at full resolution."""
    channel_mults: tuple[int, ...] = (1, 2, 4)
    """Channels of each level as multiples of ``width``; each level after the first halves H and W."""
    blocks: int = 1
    """Residual blocks per level on the way down (one more on the way up, for the extra skip)."""
    attention: tuple[int, ...] = (2,)
    """Levels (0 = full resolution) with self-attention after each residual block."""
    heads: int = 4
    """Attention heads."""
    dropout: float = 0.0
    """Dropout inside residual blocks."""
    ema_decay: float = 0.999
    """Decay of the weights' moving average that sampling uses (0: no average, sample ``net``)."""
    channels_last: bool = False
    """Keep weights channels-last (NHWC): oneDNN's faster convolutions on CPU."""


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) timesteps → (B, dim) sinusoids (the Transformer's table, at real-valued positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PhraseEncoder(nn.Module):
    """(B, L) word ids → (B, D): the mean of the words' embeddings (padding ignored), then an MLP.

    A bag of words: word order is ignored, which is what lets an unseen paraphrase of a class name
    ("a seven written by hand") land near the phrases seen in training.
    """

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return self.mlp(pooled)


def align_phrases(
    encoder: PhraseEncoder, table: torch.Tensor, phrases: PhraseSet, *, steps: int = 1500, seed: int = 0
) -> float:
    """Train ``encoder`` so that each class's phrases land on that class's row of ``table``.

    ``table`` is a class-conditional model's label embedding, (K + 1, D): row k for class k, row K
    for "no class". Each training phrase of class k is pulled onto row k and the empty phrase onto
    row K (mean squared error over the rows' mean square, Adam), so a U-Net that learnt to read
    class rows reads phrases from its first step: text conditioning starts as good as the class
    conditioning it came from, instead of from a random encoder the U-Net learns to ignore.

    Unseen paraphrases bring words outside the vocabulary (``<unk>``) and dilute the class word in
    a longer mean. So each phrase is trained with every word that is not the class's name read as
    ``<unk>`` with probability 1/4, and with 0 to 4 more ``<unk>`` words added.

    Args:
        encoder: the phrase encoder to train (in place).
        table: the class-conditional label embedding, (K + 1, D).
        phrases: the phrase set (its K classes and training templates).
        steps: optimizer steps of 256 phrases (1,500: a few seconds on one core).
        seed: the seed of the phrases drawn (the encoder's own initialisation is left as it is).

    Returns:
        The final mean squared error relative to the table's mean square (0 is exact).
    """
    K = phrases.num_classes
    if tuple(table.shape) != (K + 1, encoder.embed.embedding_dim):
        raise ValueError(
            f"a label table of shape {(K + 1, encoder.embed.embedding_dim)} is needed; got {tuple(table.shape)}"
        )
    device = encoder.embed.weight.device
    target_table = table.detach().float().to(device)
    rows = [(phrases.encode(p), k) for k in range(K) for p in phrases.phrases(k)]
    rows += [([], K)] * max(1, len(rows) // K)  # the empty phrase weighs as a class: guidance reads it
    width = max(len(r) for r, _ in rows)
    words = torch.full((len(rows), width + 4), PAD, dtype=torch.long)  # 4 more: the added <unk>s
    for i, (r, _) in enumerate(rows):
        words[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    classes = torch.tensor([k for _, k in rows])
    name_ids = [{i for n in phrases.names[k] for i in phrases.encode(n)} for k in range(K)] + [set()]
    keep = torch.tensor([[w in name_ids[k] for w in row.tolist()] for row, k in zip(words, classes)])
    lengths = (words != PAD).sum(1)
    positions = torch.arange(width + 4)
    generator = torch.Generator().manual_seed(seed)
    scale = target_table.pow(2).mean().clamp(min=1e-12)
    trainable = [p.requires_grad for p in encoder.parameters()]
    encoder.requires_grad_(True)  # a moving-average copy's encoder is frozen; it is aligned too
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    was_training = encoder.training
    encoder.train()
    error = float("nan")
    with torch.enable_grad():
        for _ in range(steps):
            picks = torch.randint(0, len(rows), (256,), generator=generator)
            ids, labels, n = words[picks].clone(), classes[picks], lengths[picks]
            unk = (torch.rand(ids.shape, generator=generator) < 0.25) & (ids != PAD) & ~keep[picks]
            extra = torch.randint(0, 5, (256, 1), generator=generator) * (n > 0).unsqueeze(1)
            unk |= (positions >= n.unsqueeze(1)) & (positions < (n.unsqueeze(1) + extra))
            ids[unk] = UNK
            loss = (encoder(ids.to(device)) - target_table[labels.to(device)]).pow(2).mean() / scale
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            error = float(loss.detach())
    encoder.train(was_training)
    for p, flag in zip(encoder.parameters(), trainable):
        p.requires_grad_(flag)
    return error


def _zeroed(module: M) -> M:
    """``module`` with every parameter zero (a residual branch that starts as nothing)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the embedding, → GroupNorm → SiLU → dropout → conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(default_groups(in_ch, 8), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(default_groups(out_ch, 8), out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zeroed(nn.Conv2d(out_ch, out_ch, 3, padding=1))  # each block starts as its skip
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return h + self.skip(x)


class Attention(nn.Module):
    """Self-attention over the H x W positions of a feature map, with a residual connection."""

    def __init__(self, ch: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(default_groups(ch, 8), ch)
        self.attn = MultiHeadSelfAttention(ch, heads if ch % heads == 0 else 1)
        _zeroed(self.attn.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        return x + self.attn(h).transpose(1, 2).reshape(B, C, H, W)


class Level(nn.Module):
    """The residual blocks of one level (each followed by attention when the level has it)."""

    def __init__(
        self, chs: list[tuple[int, int]], emb_dim: int, dropout: float, attn: bool, heads: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(i, o, emb_dim, dropout) for i, o in chs)
        self.attns = nn.ModuleList(Attention(o, heads) if attn else nn.Identity() for _, o in chs)

    def forward(
        self, h: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor], *, up: bool
    ) -> torch.Tensor:
        """Down: each block's output is pushed onto ``skips``; up: each block first takes one off."""
        for block, attn in zip(self.blocks, self.attns):
            if up:
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            else:
                h = attn(block(h, emb))
                skips.append(h)
        return h


class DiffusionUNet(nn.Module):
    """(B, C, H, W) noisy images, (B,) timesteps, optional condition → (B, C, H, W).

    Args:
        config: the shape; see ``DiffusionUNetConfig``.
    """

    def __init__(self, config: DiffusionUNetConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}; got '{c.condition}'")
        emb = 4 * c.width
        self.time = nn.Sequential(nn.Linear(c.width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label: nn.Module | None = None
        if c.condition == "class":
            self.label = nn.Embedding(c.num_classes + 1, emb)
        elif c.condition == "text":
            self.label = PhraseEncoder(phrase_set(c.phrases).vocab_size, emb)
        widths = [c.width * m for m in c.channel_mults]
        self.conv_in = nn.Conv2d(c.in_channels, c.width, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, ch = [c.width], c.width
        for level, w in enumerate(widths):
            chs = [(ch if i == 0 else w, w) for i in range(c.blocks)]
            self.down.append(Level(chs, emb, c.dropout, level in c.attention, c.heads))
            ch = w
            skips += [w] * c.blocks
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            if not last:
                skips.append(w)
        self.mid1 = ResBlock(ch, ch, emb, c.dropout)
        self.mid_attn = Attention(ch, c.heads)
        self.mid2 = ResBlock(ch, ch, emb, c.dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            chs = []
            for _ in range(c.blocks + 1):
                chs.append((ch + skips.pop(), w))
                ch = w
            self.up.append(Level(chs, emb, c.dropout, level in c.attention, c.heads))
            self.upsample.append(nn.Conv2d(w, w, 3, padding=1) if level > 0 else nn.Identity())
        self.norm_out = nn.GroupNorm(default_groups(ch, 8), ch)
        self.conv_out = _zeroed(nn.Conv2d(ch, c.in_channels, 3, padding=1))
        if c.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def adopt(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Take from pretrained tensors whose names match none of this model's what can be used.

        A text-conditioned U-Net fine-tuned from a class-conditional one (``model.pretrained``)
        takes its label table: the phrase encoder is aligned to it (`align_phrases`), so phrases
        start where the classes they name were. Returns the names used (`ember.train.finetune`).
        """
        c, table = self.config, tensors.get("label.weight")
        if c.condition != "text" or table is None or not isinstance(self.label, PhraseEncoder):
            return []
        if tuple(table.shape) != (c.num_classes + 1, 4 * c.width):
            return []
        align_phrases(self.label, table, phrase_set(c.phrases))
        return ["label.weight"]

    def embed(self, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """(B, 4 * width): the timestep's embedding plus the condition's."""
        emb = self.time(timestep_embedding(t, self.config.width))
        if self.label is None:
            return emb
        if cond is None:  # no condition given: the "none" class, or the empty phrase
            B = t.shape[0]
            null = self.config.num_classes if self.config.condition == "class" else PAD
            shape = (B,) if self.config.condition == "class" else (B, 1)
            cond = torch.full(shape, null, dtype=torch.long, device=t.device)
        return emb + self.label(cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # (B, C, H, W), (B,), (B,) or (B, L) -> (B, C, H, W)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = self.embed(t, cond)
        h = self.conv_in(x)
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            h = level(h, emb, skips, up=False)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level, up in zip(self.up, self.upsample):
            h = level(h, emb, skips, up=True)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class DiffusionModel(nn.Module):
    """The trained network ``net`` and its moving average ``ema`` (absent when ``ema_decay`` is 0).

    ``forward`` runs ``net`` (training); ``denoiser()`` is what sampling runs; ``update_ema()`` is
    called after each optimizer step (by the diffusion task).
    """

    ema_updates: torch.Tensor

    def __init__(self, config: DiffusionUNetConfig) -> None:
        super().__init__()
        self.config = config
        self.net = DiffusionUNet(config)
        self.ema = copy.deepcopy(self.net).requires_grad_(False) if config.ema_decay > 0 else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @property
    def condition(self) -> str:
        return self.config.condition

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def phrases(self) -> PhraseSet:
        """The phrase set a text-conditioned model reads."""
        return phrase_set(self.config.phrases)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, cond)

    def adopt(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """`DiffusionUNet.adopt` for ``net`` and for ``ema``, each from its own prefix's tensors."""
        used = []
        for prefix, unet in (("net.", self.net), ("ema.", self.ema)):
            if unet is not None:
                mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                used += [prefix + name for name in unet.adopt(mine)]
        return used

    def denoiser(self) -> DiffusionUNet:
        """The network to sample with: the moving average when there is one."""
        return self.ema if self.ema is not None else self.net

    def update_ema(self) -> None:
        """Move ``ema`` towards ``net`` (the decay warms up over the first updates)."""
        if self.ema is None:
            return
        update_ema(self.ema, self.net, ema_decay(self.config.ema_decay, int(self.ema_updates)))
        self.ema_updates += 1


register_family(DiffusionUNetConfig, DiffusionModel)
register_variant(
    "diffusion_unet",
    DiffusionUNetConfig,
    "16/32/64 channels over 28/14/7, attention at 7x7 (0.7 M parameters, 0.14 GFLOP an image)",
)
register_variant(
    "diffusion_unet_tiny",
    DiffusionUNetConfig,
    "Two levels of 8 and 16 channels, for tests and CI",
    width=8,
    channel_mults=(1, 2),
    attention=(1,),
    heads=2,
    ema_decay=0.9,
)
