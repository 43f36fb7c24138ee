"""Layers and containers, written once against :mod:`deferral.ops`."""

from ._activations import ACTIVATIONS as ACTIVATIONS
from ._activations import ELU as ELU
from ._activations import GELU as GELU
from ._activations import SELU as SELU
from ._activations import Activation as Activation
from ._activations import ActivationLike as ActivationLike
from ._activations import Flatten as Flatten
from ._activations import HardSigmoid as HardSigmoid
from ._activations import HardSwish as HardSwish
from ._activations import LeakyReLU as LeakyReLU
from ._activations import LogSoftmax as LogSoftmax
from ._activations import Mish as Mish
from ._activations import ReLU as ReLU
from ._activations import ReLU6 as ReLU6
from ._activations import Sigmoid as Sigmoid
from ._activations import SiLU as SiLU
from ._activations import Softmax as Softmax
from ._activations import Softplus as Softplus
from ._activations import Tanh as Tanh
from ._activations import activation_fn as activation_fn
from ._attention import MultiHeadAttention as MultiHeadAttention
from ._block import Block as Block
from ._block import Sequential as Sequential
from ._conv import Conv1D as Conv1D
from ._conv import Conv1DTranspose as Conv1DTranspose
from ._conv import Conv2D as Conv2D
from ._conv import Conv2DTranspose as Conv2DTranspose
from ._conv import Conv3D as Conv3D
from ._conv import Conv3DTranspose as Conv3DTranspose
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._embedding import Embedding as Embedding
from ._norm import BatchNorm as BatchNorm
from ._norm import GroupNorm as GroupNorm
from ._norm import LayerNorm as LayerNorm
from ._pool import AvgPool1D as AvgPool1D
from ._pool import AvgPool2D as AvgPool2D
from ._pool import AvgPool3D as AvgPool3D
from ._pool import GlobalAvgPool1D as GlobalAvgPool1D
from ._pool import GlobalAvgPool2D as GlobalAvgPool2D
from ._pool import GlobalAvgPool3D as GlobalAvgPool3D
from ._pool import GlobalMaxPool1D as GlobalMaxPool1D
from ._pool import GlobalMaxPool2D as GlobalMaxPool2D
from ._pool import GlobalMaxPool3D as GlobalMaxPool3D
from ._pool import MaxPool1D as MaxPool1D
from ._pool import MaxPool2D as MaxPool2D
from ._pool import MaxPool3D as MaxPool3D
from ._pool_adaptive import AdaptiveAvgPool1D as AdaptiveAvgPool1D
from ._pool_adaptive import AdaptiveAvgPool2D as AdaptiveAvgPool2D
from ._pool_adaptive import AdaptiveMaxPool1D as AdaptiveMaxPool1D
from ._pool_adaptive import AdaptiveMaxPool2D as AdaptiveMaxPool2D
from ._rnn import GRU as GRU
from ._rnn import LSTM as LSTM
from ._rnn import RNN as RNN

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "Activation",
    "ActivationLike",
    "AdaptiveAvgPool1D",
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool1D",
    "AdaptiveMaxPool2D",
    "AvgPool1D",
    "AvgPool2D",
    "AvgPool3D",
    "BatchNorm",
    "Block",
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Conv3DTranspose",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "HardSigmoid",
    "HardSwish",
    "LeakyReLU",
    "LogSoftmax",
    "Mish",
    "ReLU6",
    "SELU",
    "SiLU",
    "Softplus",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GlobalAvgPool3D",
    "GlobalMaxPool1D",
    "GlobalMaxPool2D",
    "GlobalMaxPool3D",
    "GroupNorm",
    "GRU",
    "LayerNorm",
    "LSTM",
    "MaxPool1D",
    "MaxPool2D",
    "MaxPool3D",
    "MultiHeadAttention",
    "ReLU",
    "RNN",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "activation_fn",
]


def __dir__() -> list[str]:
    """Only the public API (not the names this module imports)."""
    return sorted(__all__)
