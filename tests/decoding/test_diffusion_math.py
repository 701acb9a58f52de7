"""The diffusion math against ``diffusers``' schedulers (the oracle) on the same inputs."""

from __future__ import annotations

import pytest
import torch

from ember.decoding import diffusion as d

diffusers = pytest.importorskip("diffusers")

SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


def _schedule(name: str) -> d.NoiseSchedule:
    return d.NoiseSchedule.named(name, 1000)


def _same_schedule(oracle, ours: d.NoiseSchedule):  # type: ignore[no-untyped-def]
    """The oracle on our float64 ᾱ: diffusers keeps ᾱ in float32, whose rounding 1 - ᾱ magnifies near
    t = 0 (the schedules themselves are compared in test_schedules_equal_diffusers)."""
    oracle.alphas_cumprod = ours.alphas_cumprod
    return oracle


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_equal_diffusers(name: str) -> None:
    oracle = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=SCHEDULES[name])
    ours = _schedule(name)
    torch.testing.assert_close(ours.betas.float(), oracle.betas)
    torch.testing.assert_close(ours.alphas_cumprod.float(), oracle.alphas_cumprod, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_forward_process_and_targets_equal_diffusers(prediction: str) -> None:
    oracle = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction)
    x0, noise = _inputs()
    t = torch.tensor([0, 417, 999])
    ours = _schedule("linear")
    torch.testing.assert_close(d.add_noise(ours, x0, noise, t), oracle.add_noise(x0, noise, t))
    if prediction == "v_prediction":
        torch.testing.assert_close(
            d.training_target(ours, x0, noise, t, "v_prediction"), oracle.get_velocity(x0, noise, t)
        )


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t", [999, 500, 1, 0])
def test_ddpm_step_equals_diffusers(name: str, prediction: str, t: int) -> None:
    oracle = _same_schedule(
        diffusers.DDPMScheduler(
            num_train_timesteps=1000, beta_schedule=SCHEDULES[name], prediction_type=prediction
        ),
        _schedule(name),
    )
    output, x_t = _inputs(t)
    expected = oracle.step(output, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample.float()
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
    got = d.ddpm_step(_schedule(name), output, t, x_t, noise=noise, prediction=prediction)  # type: ignore[arg-type]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("steps", [50, 10])
def test_strided_ddpm_step_equals_diffusers(steps: int) -> None:
    oracle = _same_schedule(diffusers.DDPMScheduler(num_train_timesteps=1000), _schedule("linear"))
    oracle.set_timesteps(steps)
    ts = d.timesteps(1000, steps)
    assert ts == oracle.timesteps.tolist()
    output, x_t = _inputs()
    for i in (0, len(ts) // 2, len(ts) - 1):
        t = ts[i]
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        expected = oracle.step(output, t, x_t, generator=torch.Generator().manual_seed(3)).prev_sample.float()
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3))
        got = d.ddpm_step(_schedule("linear"), output, t, x_t, prev_t=prev, noise=noise)
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_steps_equal_diffusers(spacing: str, prediction: str, eta: float) -> None:
    oracle = _same_schedule(
        diffusers.DDIMScheduler(
            num_train_timesteps=1000, prediction_type=prediction, timestep_spacing=spacing
        ),
        _schedule("linear"),
    )
    oracle.set_timesteps(50)
    ts = d.timesteps(1000, 50, spacing)  # type: ignore[arg-type]
    assert ts == oracle.timesteps.tolist()
    output, x_t = _inputs()
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
    for i in (0, 25, 49):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        expected = oracle.step(
            output, ts[i], x_t, eta=eta, variance_noise=noise, use_clipped_model_output=True
        ).prev_sample.float()
        got = d.ddim_step(
            _schedule("linear"),
            output,
            ts[i],
            prev,
            x_t,
            eta=eta,
            noise=noise,
            prediction=prediction,  # type: ignore[arg-type]
        )
        torch.testing.assert_close(got, expected)


def test_ddim_with_eta_one_is_the_ddpm_posterior() -> None:
    """eta = 1 gives the DDPM posterior's variance, and (without clipping) its whole step."""
    schedule = _schedule("cosine")
    output, x_t = _inputs()
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))
    ab = schedule.alphas_cumprod
    for t in (1, 10, 300, 999):
        posterior = (1 - ab[t - 1]) / (1 - ab[t]) * schedule.betas[t]
        # the DDIM σ² at eta = 1 for the step t -> t - 1
        sigma2 = (1 - ab[t - 1]) / (1 - ab[t]) * (1 - ab[t] / ab[t - 1])
        torch.testing.assert_close(sigma2, posterior)
        ddim = d.ddim_step(schedule, output, t, t - 1, x_t, eta=1.0, noise=noise, clip=False)
        ddpm = d.ddpm_step(schedule, output, t, x_t, noise=noise, clip=False)
        torch.testing.assert_close(ddim, ddpm, rtol=1e-5, atol=1e-5)


def test_ddim_with_eta_one_is_the_clipped_ddpm_step() -> None:
    """With x̂_0 clipped, DDIM at eta = 1 still takes the DDPM step: its noise comes from the clipped x̂_0.

    At the noisiest steps x̂_0 = (x_t - sqrt(1 - ᾱ) ε̂) / sqrt(ᾱ) is far outside [-1, 1]; a DDIM step
    that kept the model's ε̂ beside the clipped x̂_0 drifted off the sampling path (guided samples
    became saturated blobs) while DDPM's did not.
    """
    schedule = _schedule("linear")
    output, x_t = _inputs()
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2))
    for t in (999, 700, 300, 10):
        x0, _ = d.predicted_x0_and_noise(schedule, output, t, x_t)
        assert t < 300 or (x0.abs() > 1).float().mean() > 0.5  # clipping is at work at the high steps
        ddim = d.ddim_step(schedule, output, t, t - 1, x_t, eta=1.0, noise=noise)
        ddpm = d.ddpm_step(schedule, output, t, x_t, noise=noise)
        torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


def test_predictions_are_consistent() -> None:
    """Each parameterization recovers the same x0 and noise from its own training target."""
    schedule = _schedule("linear")
    x0, noise = _inputs()
    for t in (3, 600):
        x_t = d.add_noise(schedule, x0, noise, torch.full((3,), t))
        for prediction in PREDICTIONS:
            target = d.training_target(schedule, x0, noise, torch.full((3,), t), prediction)  # type: ignore[arg-type]
            got_x0, got_eps = d.predicted_x0_and_noise(schedule, target, t, x_t, prediction)  # type: ignore[arg-type]
            torch.testing.assert_close(got_x0, x0, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got_eps, noise, rtol=1e-4, atol=1e-4)


def test_sampling_is_reproducible_under_a_seed_and_errors_are_clear() -> None:
    schedule = d.NoiseSchedule.linear(100)

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        return 0.1 * x

    runs = [
        d.sample(
            denoise,
            (2, 1, 4, 4),
            schedule,
            sampler=s,
            steps=10,
            eta=0.5,
            generator=torch.Generator().manual_seed(0),
        )
        for s in ("ddpm", "ddim", "ddpm")
    ]
    assert torch.equal(runs[0], runs[2]) and not torch.equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="steps must be in 1..100"):
        d.timesteps(100, 101)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        d.sample(denoise, (1, 1, 2, 2), schedule, sampler="euler")  # type: ignore[arg-type]
