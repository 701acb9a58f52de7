"""The model zoo: ``create(name, **options)`` builds any registered model by name.

Importing this package registers every family: a config class and its model
(``register_family``), and named variants that override some of the config's defaults
(``register_variant``); a variant's options are its config's fields. Each family has a ``*_tiny``
variant for tests and CI; ``ember list models`` shows every name with what it is.

Vision families (mlp, cnn, resnet, mobilenet, convattn, vit) take ``in_channels``, ``num_classes``
and ``image_size``, map (B, C, H, W) floats to (B, num_classes) logits and offer timm's
``forward_features`` / ``forward_head`` split. Dense prediction differs only in its output:
``centernet`` returns heatmap / size / offset maps, ``unet`` (B, num_classes, H, W) logits. Text
families (gpt, rnn, transformer_encoder, encoder_decoder) take ``vocab_size`` and token ids.
Generative families (``vae``, ``autoencoder``, ``dcgan``, ``diffusion_unet``) and the
``captioner`` have contracts of their own, in their modules.

Example:
    >>> import torch
    >>> from ember import models
    >>> model = models.create("resnet", in_channels=1, num_classes=10)
    >>> model(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> "resnet_tiny" in models.list_models()
    True
"""

from ember.models._zoo import create, list_models, register_family, register_model, register_variant, registry
from ember.models.autoencoder import AutoEncoder, AutoEncoderConfig, AutoEncoderOutput  # generative
from ember.models.captioner import Captioner, CaptionerConfig  # image to text
from ember.models.cnn import CNN, CNNConfig
from ember.models.convattn import ConvAttn, ConvAttnConfig
from ember.models.detector import CenterNet, CenterNetConfig  # dense: detection
from ember.models.diffusion_unet import DiffusionModel, DiffusionUNet, DiffusionUNetConfig  # generative
from ember.models.dp_cnn import DPCNN, DPCNNConfig  # for differentially private training
from ember.models.gan import DCGAN, DCGANConfig  # generative
from ember.models.gpt import GPT, GPTConfig
from ember.models.mlp import MLP, MLPConfig
from ember.models.mobilenet import MobileNet, MobileNetConfig
from ember.models.resnet import ResNet, ResNetConfig
from ember.models.rnn import RNNClassifier, RNNClassifierConfig, RNNLanguageModel, RNNLanguageModelConfig
from ember.models.seq2seq import EncoderDecoder, EncoderDecoderConfig
from ember.models.tabular import TabularMLP, TabularMLPConfig
from ember.models.transformer_encoder import TransformerEncoderClassifier, TransformerEncoderConfig
from ember.models.unet import UNet, UNetConfig  # dense: segmentation
from ember.models.vit import ViT, ViTConfig

__all__ = [
    "CNN",
    "MLP",
    "CNNConfig",
    "DPCNN",
    "DPCNNConfig",
    "ConvAttn",
    "ConvAttnConfig",
    "MLPConfig",
    "MobileNet",
    "MobileNetConfig",
    "ResNet",
    "ResNetConfig",
    "create",
    "list_models",
    "register_family",
    "register_model",
    "register_variant",
    "registry",
    # sequences and language
    "GPT",
    "EncoderDecoder",
    "EncoderDecoderConfig",
    "GPTConfig",
    "RNNClassifier",
    "RNNClassifierConfig",
    "RNNLanguageModel",
    "RNNLanguageModelConfig",
    "TransformerEncoderClassifier",
    "TransformerEncoderConfig",
    "ViT",
    "ViTConfig",
    # tables
    "TabularMLP",
    "TabularMLPConfig",
    # dense prediction: detection and segmentation
    "CenterNet",
    "CenterNetConfig",
    "UNet",
    "UNetConfig",
    # generative: autoencoders, GANs, diffusion; captioning
    "AutoEncoder",
    "AutoEncoderConfig",
    "AutoEncoderOutput",
    "Captioner",
    "CaptionerConfig",
    "DCGAN",
    "DCGANConfig",
    "DiffusionModel",
    "DiffusionUNet",
    "DiffusionUNetConfig",
]
