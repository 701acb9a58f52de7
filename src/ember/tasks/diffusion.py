"""Denoising diffusion (DDPM, Ho et al. 2020): learn to undo Gaussian noise; sample with DDPM or DDIM.

Each training example gets a timestep t ~ U{0 .. T-1} and noise ε; the model sees
``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` (images scaled to [-1, 1]) and is trained by mean squared
error to predict ε (``prediction: epsilon``) or v (``v_prediction``). The schedule and samplers
are `ember.decoding.diffusion`. Validation draws t and ε from a fixed seed, so its loss repeats.

Conditioning follows the model (``model.condition``): a class-conditional model gets the batch's
labels, a text-conditioned one a phrase naming each label, drawn from the training templates of its
`ember.data.phrases` set (each word replaced by ``<unk>`` with probability ``word_drop``, so that
unknown words of an unseen paraphrase are no surprise). With probability ``cond_drop`` the
condition is dropped (the "no class" id, the empty phrase): the same model then also predicts
unconditionally, which classifier-free guidance needs (Ho & Salimans 2022). After each optimizer
step the model's moving average is updated; sampling uses it.

Example:
    >>> import torch
    >>> from ember.models import create
    >>> model, task = create("diffusion_unet_tiny", image_size=8, condition="class"), Diffusion()
    >>> output, target = task.forward(model, (torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])))
    >>> task.loss(output, target).shape
    torch.Size([])
    >>> task.sample(model, 2, labels=torch.tensor([7, 7]), steps=5, guidance=2.0,
    ...             generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.phrases import PAD, UNK
from ember.decoding import diffusion as dd
from ember.tasks.base import LossMean, registry, split_batch
from ember.tasks.generative import (
    ImageGeneration,
    check_labels,
    device_of,
    image_shape,
    spec_option,
    to_images,
    to_model_space,
)
from ember.tasks.spec import ModelSpec

EVAL_SEED = 0


class Diffusion(ImageGeneration):
    """Noise-prediction training and DDPM/DDIM sampling with classifier-free guidance.

    Args:
        schedule: ``linear`` (DDPM's) or ``cosine`` (Nichol & Dhariwal's).
        timesteps: T, the noising steps.
        prediction: ``epsilon`` or ``v_prediction``.
        cond_drop: probability of training without the condition (for guidance).
        word_drop: probability of each phrase word reading as ``<unk>`` (text conditioning).
    """

    headline = "loss"
    mode: Literal["max", "min"] = "min"

    def __init__(
        self,
        *,
        schedule: str = "linear",
        timesteps: int = 1000,
        prediction: str = "epsilon",
        cond_drop: float = 0.1,
        word_drop: float = 0.1,
    ) -> None:
        if prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction must be epsilon or v_prediction; got '{prediction}'")
        if not 0 <= cond_drop < 1 or not 0 <= word_drop < 1:
            raise ValueError(f"cond_drop and word_drop must be in [0, 1); got {cond_drop}, {word_drop}")
        self.schedule = dd.NoiseSchedule.named(schedule, timesteps)
        self.prediction: Any = prediction
        self.cond_drop = cond_drop
        self.word_drop = word_drop
        self._phrases: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ training

    def forward(self, model: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = split_batch(batch)
        x0 = to_model_space(images)
        generator = None if model.training else torch.Generator(x0.device).manual_seed(EVAL_SEED)
        B = x0.shape[0]
        t = torch.randint(0, self.schedule.num_steps, (B,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        x_t = dd.add_noise(self.schedule, x0, noise, t)
        cond = self.training_condition(model, labels, generator)
        return model(x_t, t, cond), dd.training_target(self.schedule, x0, noise, t, self.prediction)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.float(), target.float())

    def evaluation(self) -> DiffusionEvaluation:
        return DiffusionEvaluation()

    def after_step(self, model: Any) -> None:
        model.update_ema()

    def training_condition(
        self, model: Any, labels: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """The condition a training batch shows the model (dropped with probability ``cond_drop``)."""
        condition = getattr(model, "condition", "none")
        if condition == "none":
            return None
        B, device = labels.shape[0], labels.device
        drop = torch.rand(B, device=device, generator=generator) < self.cond_drop
        if condition == "class":
            return labels.masked_fill(drop, model.num_classes)
        table, counts = self.phrase_table(model, device)
        pick = (torch.rand(B, device=device, generator=generator) * counts[labels]).long()
        ids = table[labels, pick]  # (B, L)
        unknown = (torch.rand(ids.shape, device=device, generator=generator) < self.word_drop) & (ids != PAD)
        return ids.masked_fill(unknown, UNK).masked_fill(drop[:, None], PAD)

    def phrase_table(self, model: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's training phrases as (K, P, L) ids and (K,) counts, cached on ``device``."""
        phrases = model.phrases
        key = (phrases.name, device)
        if key not in self._phrases:
            table, counts = phrases.table()
            self._phrases[key] = (table.to(device), counts.to(device))
        return self._phrases[key]

    # ------------------------------------------------------------------ generation

    def network(self, model: Any) -> nn.Module:
        """The (averaged) denoiser: (x_t, t[, class ids]) → its prediction (noise or v)."""
        return model.denoiser()

    def network_inputs(self, spec: ModelSpec, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        x = torch.randn(n, *spec.inputs.shape, generator=generator)
        t = torch.randint(0, self.schedule.num_steps, (n,), generator=generator)
        if spec_option(spec, "condition") != "class":
            return x, t
        classes = int(spec_option(spec, "num_classes"))
        return x, t, torch.randint(0, classes, (n,), generator=generator)

    def sample_classes(self, model: Any) -> int:
        return int(model.num_classes) if getattr(model, "condition", "none") != "none" else 0

    def prompts(self, model: Any, split: Literal["train", "heldout"] = "heldout") -> list[tuple[int, str]]:
        """(class, phrase) of every ``split`` phrase a text-conditioned model can be scored on ([] else)."""
        if getattr(model, "condition", "none") != "text":
            return []
        phrases = model.phrases
        return [(k, p) for k in range(phrases.num_classes) for p in phrases.phrases(k, split)]

    def condition_for(
        self, model: Any, n: int, labels: torch.Tensor | None, prompt: str | list[str] | None
    ) -> torch.Tensor | None:
        """The condition tensor for ``n`` samples asked for by ``labels`` or ``prompt`` (None: none)."""
        condition = getattr(model, "condition", "none")
        check_labels(labels, n, self.sample_classes(model))
        device = device_of(model)
        if prompt is not None:
            if condition != "text":
                raise ValueError(
                    "this model takes no prompt (it is not text-conditioned); use --class or neither"
                )
            if labels is not None:
                raise ValueError("give labels or a prompt, not both")
            texts = [prompt] * n if isinstance(prompt, str) else list(prompt)
            if len(texts) != n:
                raise ValueError(f"give one prompt, or one per image ({n}); got {len(texts)}")
            return model.phrases.batch(texts).to(device)
        if labels is None:
            return None
        if condition == "class":
            return labels.to(device)
        phrases = model.phrases
        return phrases.batch([phrases.phrases(int(k))[0] for k in labels]).to(device)

    @torch.no_grad()  # (not inference_mode: the images may go on into autograd-tracked code)
    def sample(
        self,
        model: Any,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        prompt: str | list[str] | None = None,
        generator: torch.Generator | None = None,
        sampler: Literal["ddpm", "ddim"] = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """``n`` images, (n, C, H, W) in [0, 1], from the model's moving average.

        Args:
            model: a `ember.models.DiffusionModel` (or any with ``denoiser()`` and a config).
            n: images to make.
            labels: (n,) classes, for a class- or text-conditioned model (a text one gets a phrase
                naming each class).
            prompt: a phrase (or one per image) for a text-conditioned model.
            generator: the source of all noise.
            sampler: ``ddpm`` (ancestral, T steps by default) or ``ddim`` (50 by default).
            steps: timesteps visited.
            eta: DDIM's noise (0: deterministic; 1: the DDPM posterior's variance).
            guidance: classifier-free guidance scale (1: the conditional model alone; > 1 pushes
                samples towards the condition; it needs a condition).
        """
        cond = self.condition_for(model, n, labels, prompt)
        if guidance != 1.0 and cond is None:
            raise ValueError("guidance needs a condition: give labels (--class) or a prompt, or guidance 1")
        net = model.denoiser()
        was_training = net.training
        net.eval()
        device = device_of(model)
        null = None if cond is None else torch.full_like(cond, model.num_classes if cond.dim() == 1 else PAD)

        def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
            ts = torch.full((x.shape[0],), t, device=device)
            if guidance == 1.0 or cond is None or null is None:
                return net(x, ts, cond)
            both = net(torch.cat([x, x]), torch.cat([ts, ts]), torch.cat([cond, null]))
            conditional, unconditional = both.chunk(2)
            return dd.guide(conditional, unconditional, guidance)

        x = dd.sample(
            denoise,
            (n, *image_shape(model)),
            self.schedule,
            sampler=sampler,
            steps=steps,
            eta=eta,
            prediction=self.prediction,
            generator=generator,
            device=device,
        )
        net.train(was_training)
        return to_images(x)


class DiffusionEvaluation:
    """The mean denoising loss over a pass."""

    def __init__(self) -> None:
        self.loss = LossMean()

    def update(self, output: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        self.loss.update(loss, output.shape[0])

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss.compute()}


@registry.register("diffusion")
def diffusion(
    *,
    schedule: str = "linear",
    timesteps: int = 1000,
    prediction: str = "epsilon",
    cond_drop: float = 0.1,
    word_drop: float = 0.1,
) -> Diffusion:
    """Denoising diffusion with DDPM/DDIM sampling and classifier-free guidance; see :class:`Diffusion`."""
    return Diffusion(
        schedule=schedule,
        timesteps=timesteps,
        prediction=prediction,
        cond_drop=cond_drop,
        word_drop=word_drop,
    )


__all__ = ["Diffusion"]
