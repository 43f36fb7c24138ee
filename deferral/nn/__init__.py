"""Layers and containers, written once against :mod:`deferral.ops`."""

from ._activations import GELU as GELU
from ._activations import Activation as Activation
from ._activations import Flatten as Flatten
from ._activations import ReLU as ReLU
from ._activations import Sigmoid as Sigmoid
from ._activations import Softmax as Softmax
from ._activations import Tanh as Tanh
from ._block import Block as Block
from ._block import Sequential as Sequential
from ._block import predict_mode as predict_mode
from ._block import train_mode as train_mode
from ._dense import Dense as Dense

# -- convolution and pooling (family: conv) --

# -- normalization, embedding, dropout (family: norm) --

# -- recurrent and attention (family: seq) --

__all__ = ["GELU", "Activation", "Block", "Dense", "Flatten", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "predict_mode", "train_mode"]
