"""Attributions against Captum on the same model and baseline; completeness; bounded batches; rollout."""

import pytest
import torch
from torch import nn

from ember.models import create
from ember.responsible import attribution as A
from ember.responsible.gradcam import grad_cam
from ember.responsible.rollout import attention_rollout, recording_attention

captum = pytest.importorskip("captum.attr")


def _cnn():
    torch.manual_seed(0)
    return create("cnn_tiny", in_channels=1, image_size=8).eval()


def test_integrated_gradients_equal_captums_and_complete():
    model, x = _cnn(), torch.rand(6, 1, 8, 8)
    target = model(x).argmax(1)
    base = torch.full_like(x, 0.1)
    ours = A.integrated_gradients(model, x, target, baseline=base, steps=200, max_batch=128)
    theirs, delta = captum.IntegratedGradients(model).attribute(
        x, baselines=base, target=target, n_steps=200, return_convergence_delta=True
    )
    torch.testing.assert_close(ours.attributions, theirs.float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.completeness_error, delta.abs().float(), atol=1e-5, rtol=1e-3)
    assert float(ours.completeness_error.max()) < 0.005


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
def test_saliency_and_guided_backprop_equal_captums():
    model, x = _cnn(), torch.rand(4, 1, 8, 8)
    target = model(x).argmax(1)
    torch.testing.assert_close(
        A.saliency(model, x, target).attributions,
        captum.Saliency(model).attribute(x.clone().requires_grad_(), target=target),
    )
    torch.testing.assert_close(
        A.guided_backprop(model, x, target).attributions,
        captum.GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=target),
    )


def test_grad_cam_equals_captums_layer_gradcam():
    from ember.responsible.gradcam import last_conv

    model, x = _cnn(), torch.rand(4, 1, 8, 8)
    target = model(x).argmax(1)
    layer = last_conv(model)
    theirs = captum.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    theirs = captum.LayerAttribution.interpolate(theirs, (8, 8), interpolate_mode="bilinear")
    torch.testing.assert_close(grad_cam(model, x, target).attributions, theirs, atol=1e-6, rtol=1e-5)


def test_batches_stay_bounded():
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    model.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[0]))
    A.integrated_gradients(model, torch.rand(10, 1, 8, 8), steps=50, max_batch=32)
    assert max(seen) <= 32


def test_token_attributions_are_complete_and_rollout_records_attention():
    torch.manual_seed(0)
    model = create("transformer_encoder_tiny", vocab_size=20, max_len=12, num_classes=3).eval()
    tokens = torch.randint(1, 20, (3, 12))
    result = A.token_integrated_gradients(model, tokens, steps=64)
    assert result.attributions.shape == (3, 12)
    assert float(result.completeness_error.max()) < 0.01 * float(result.delta.abs().max() + 1)
    with recording_attention() as kept:
        model(tokens)
    assert kept and kept[0].shape[-1] == 12
    rolled = attention_rollout(model, tokens)
    assert rolled.attributions.shape == (3, 12)
    vit = create("vit_tiny", in_channels=1, image_size=8, patch_size=4).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():  # the recording path computes the same outputs as the fused kernel
        plain = vit(x)
        with recording_attention():
            recorded = vit(x)
    torch.testing.assert_close(plain, recorded, atol=1e-5, rtol=1e-4)
