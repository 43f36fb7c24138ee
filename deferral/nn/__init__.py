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
from ._dense import Dense as Dense

__all__ = ["GELU", "Activation", "Block", "Dense", "Flatten", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh"]
