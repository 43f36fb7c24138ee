"""Reference models, each defined once and without a single input size.

Every input-dependent size (channels after a convolution, the features after ``Flatten``)
is inferred at the first forward pass, so the same definition serves any resolution, and
initializes to the same bits on every backend.

Parameter counts (trainable parameters, as the frameworks report them):

* ``lenet5()``: 61,706 for 1x28x28 inputs (the LeNet-5 of *Dive into Deep Learning*,
  sigmoid activations, average pooling, 10 classes; also 1x32x32 without the padding).
* ``vgg11()``: 132,863,336 for 1000 classes at every input size (torchvision's ``vgg11``).
* ``resnet18()``: 11,689,512 for 1000 classes (torchvision's ``resnet18``); its BatchNorm
  layers add 9,600 non-trainable running statistics.
* ``transformer_encoder_block(12, 3072, units=768)``: 7,087,872 (one BERT-base layer).
* ``gpt3_175b()``: 174,604,259,328 (96 layers, width 12,288, 96 heads, vocabulary 50,257,
  2,048 positions, output projection tied to the token embedding): 0.23% under the
  published "175B".

Example:
    >>> import deferral
    >>> from deferral import models
    >>> net = models.lenet5()
    >>> deferral.summary(net, (None, 1, 28, 28)).trainable_params
    61706
"""

from __future__ import annotations

from typing import Any

from . import nn, ops

__all__ = [
    "BasicBlock",
    "DecoderBlock",
    "GPTDecoder",
    "TransformerEncoderBlock",
    "gpt3_175b",
    "gpt_decoder",
    "lenet5",
    "resnet18",
    "transformer_encoder_block",
    "vgg11",
]


def lenet5(num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 as in *Dive into Deep Learning*: two sigmoid convolutions with average pooling,
    then three dense layers. Takes (N, 1, 28, 28) (or any size the convolutions fit)."""
    return nn.Sequential([
        nn.Conv2D(6, kernel_size=5, padding=2, activation="sigmoid"),
        nn.AvgPool2D(pool_size=2, strides=2),
        nn.Conv2D(16, kernel_size=5, activation="sigmoid"),
        nn.AvgPool2D(pool_size=2, strides=2),
        nn.Flatten(),
        nn.Dense(120, activation="sigmoid"),
        nn.Dense(84, activation="sigmoid"),
        nn.Dense(num_classes),
    ])


def vgg11(num_classes: int = 1000, dropout: float = 0.5) -> nn.Sequential:
    """VGG-11 (configuration "A") as torchvision's ``vgg11``: eight 3x3 convolutions in five
    stages, ``AdaptiveAvgPool2D((7, 7))``, then three dense layers.

    The adaptive pooling makes the flattened features 512x7x7 = 25,088 at every resolution
    (at 224x224 it is the identity), so the parameters, 132,863,336 for 1000 classes, do not
    depend on the input size; any input of at least 32x32 fits the five poolings.
    """
    layers: list[nn.Block] = []
    for stage in ((64,), (128,), (256, 256), (512, 512), (512, 512)):
        for channels in stage:
            layers.append(nn.Conv2D(channels, kernel_size=3, padding=1, activation="relu"))
        layers.append(nn.MaxPool2D(pool_size=2, strides=2))
    layers += [
        nn.AdaptiveAvgPool2D((7, 7)),
        nn.Flatten(),
        nn.Dense(4096, activation="relu"), nn.Dropout(dropout),
        nn.Dense(4096, activation="relu"), nn.Dropout(dropout),
        nn.Dense(num_classes),
    ]
    return nn.Sequential(layers)


class BasicBlock(nn.Block):
    """ResNet's basic residual block: two 3x3 convolutions with BatchNorm and a shortcut.

    The shortcut is a strided 1x1 convolution with BatchNorm when the stride or the number of
    channels changes (``downsample=True``), else the identity.
    """

    def __init__(self, channels: int, strides: int = 1, downsample: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(channels, 3, strides=strides, padding=1, use_bias=False)
        self.bn1 = nn.BatchNorm()
        self.conv2 = nn.Conv2D(channels, 3, padding=1, use_bias=False)
        self.bn2 = nn.BatchNorm()
        self.downsample = (
            nn.Sequential([nn.Conv2D(channels, 1, strides=strides, use_bias=False), nn.BatchNorm()])
            if downsample else None
        )

    def forward(self, x: Any) -> Any:
        y = ops.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return ops.relu(ops.add(y, shortcut))


def resnet18(num_classes: int = 1000) -> nn.Sequential:
    """ResNet-18 (He et al. 2016) as torchvision defines it: a 7x7 stem, four stages of two
    basic blocks (64, 128, 256, 512 channels), global average pooling and a dense classifier."""
    layers: list[nn.Block] = [
        nn.Conv2D(64, kernel_size=7, strides=2, padding=3, use_bias=False),
        nn.BatchNorm(),
        nn.ReLU(),
        nn.MaxPool2D(pool_size=3, strides=2, padding=1),
    ]
    for i, channels in enumerate((64, 128, 256, 512)):
        first_strides = 1 if i == 0 else 2
        layers.append(BasicBlock(channels, first_strides, downsample=i > 0))
        layers.append(BasicBlock(channels))
    layers += [nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(num_classes)]
    return nn.Sequential(layers)


class TransformerEncoderBlock(nn.Block):
    """A post-norm Transformer encoder layer (Vaswani et al. 2017; BERT's layout):
    self-attention, add & LayerNorm, a two-layer GELU feed-forward network, add & LayerNorm.

    Input and output are (N, T, units).
    """

    def __init__(self, num_heads: int, ffn_units: int, units: int) -> None:
        super().__init__()
        self.attention = nn.MultiHeadAttention(num_heads, units)
        self.norm1 = nn.LayerNorm()
        self.ffn1 = nn.Dense(ffn_units, activation="gelu")
        self.ffn2 = nn.Dense(units)
        self.norm2 = nn.LayerNorm()

    def forward(self, x: Any, mask: Any = None) -> Any:
        h = self.norm1(ops.add(x, self.attention(x, mask=mask)))
        return self.norm2(ops.add(h, self.ffn2(self.ffn1(h))))


def transformer_encoder_block(num_heads: int, ffn_units: int, units: int = 512) -> TransformerEncoderBlock:
    """One Transformer encoder layer; ``units`` is the model width (the input's feature size)."""
    return TransformerEncoderBlock(num_heads, ffn_units, units)


class DecoderBlock(nn.Block):
    """A pre-norm decoder layer (GPT-2/GPT-3): LayerNorm, masked self-attention, residual;
    LayerNorm, GELU feed-forward network, residual."""

    def __init__(self, num_heads: int, units: int, ffn_units: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm()
        self.attention = nn.MultiHeadAttention(num_heads, units)
        self.norm2 = nn.LayerNorm()
        self.ffn1 = nn.Dense(ffn_units, activation="gelu")
        self.ffn2 = nn.Dense(units)

    def forward(self, x: Any, mask: Any = None) -> Any:
        h = ops.add(x, self.attention(self.norm1(x), mask=mask))
        return ops.add(h, self.ffn2(self.ffn1(self.norm2(h))))


class GPTDecoder(nn.Block):
    """A GPT-style language model: token and position embeddings, decoder layers, a final
    LayerNorm, and logits through the transposed token embedding (tied weights).

    Called as ``net(tokens, positions, mask=None)`` with integer (N, T) token and position ids
    and an optional boolean attention mask (True = may attend; pass a causal mask to train).
    """

    def __init__(self, num_layers: int, units: int, num_heads: int, vocab_size: int,
                 max_length: int, ffn_units: int | None = None) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, units)
        self.position_embedding = nn.Embedding(max_length, units)
        self.blocks = nn.Sequential([DecoderBlock(num_heads, units, ffn_units or 4 * units)
                                     for _ in range(num_layers)])
        self.norm = nn.LayerNorm()

    def forward(self, tokens: Any, positions: Any, mask: Any = None) -> Any:
        h = ops.add(self.token_embedding(tokens), self.position_embedding(positions))
        for block in self.blocks:
            h = block(h, mask)
        h = self.norm(h)
        return ops.matmul(h, ops.transpose(self.token_embedding.weight.data()))


def gpt_decoder(num_layers: int, units: int, num_heads: int, vocab_size: int, max_length: int,
                ffn_units: int | None = None) -> GPTDecoder:
    """A GPT-style decoder of the given configuration (``ffn_units`` defaults to ``4 * units``)."""
    return GPTDecoder(num_layers, units, num_heads, vocab_size, max_length, ffn_units)


def gpt3_175b() -> GPTDecoder:
    """The GPT-3 175B configuration (Brown et al. 2020): 96 layers, width 12,288, 96 heads,
    vocabulary 50,257, 2,048 positions. Summarize it (it does not fit in memory):
    ``deferral.summary(gpt3_175b(), TensorSpec((1, 2048), "int64"), TensorSpec((1, 2048), "int64"))``."""
    return gpt_decoder(96, 12288, 96, 50257, 2048)


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
