"""``load_state_dict`` for deferral modules: all or nothing, and completing deferred parameters.

torch's own loading copies tensor after tensor and reports the problems at the end, so a bad
state dict leaves a model half loaded; its ``Lazy*`` modules also need a dry-run forward
first. Here every key, shape and value is checked before anything changes; then the deferred
parameters the state dict covers take its shapes and values (deferral's ``set_data``, in one
transaction), and torch's own loading copies the rest in place (so optimizers keep their
tensors) and reports missing and unexpected keys as it always does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.modules.module import _IncompatibleKeys

from deferral import Parameter
from deferral.parameter import transaction

if TYPE_CHECKING:
    from ._module import DeferralModule

__all__ = ["load"]


def load(module: DeferralModule, state_dict: Mapping[str, Any], strict: bool, assign: bool) -> _IncompatibleKeys:
    """Load ``state_dict`` into ``module`` (see :meth:`DeferralModule.load_state_dict`).

    Raises:
        StateDictError: listing every problem; nothing has changed then.
    """
    from ._module import StateDictError, named_deferral_params

    if not isinstance(state_dict, Mapping):
        raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
    entries = [(key, param) for key, _, _, param in named_deferral_params(module) if key in state_dict]
    problems = _key_problems(module, state_dict) if strict else []
    problems += _value_problems(entries, state_dict)
    if problems:
        raise StateDictError(
            f"Error(s) in loading state_dict for {module._get_name()}:\n\t" + "\n\t".join(problems)
            + "\nNothing was changed."
        )
    with transaction():
        for key, param in entries:
            if not param.initialized:
                param.set_data(state_dict[key])
        return torch.nn.Module.load_state_dict(module, state_dict, strict=False, assign=assign)


def _key_problems(module: DeferralModule, state_dict: Mapping[str, Any]) -> list[str]:
    expected = list(module.state_dict(keep_vars=True))
    missing = [k for k in expected if k not in state_dict]
    known = set(expected)
    unexpected = [k for k in state_dict if k not in known]
    problems = []
    if unexpected:
        problems.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
    if missing:
        problems.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
    return problems


def _value_problems(entries: list[tuple[str, Parameter]], state_dict: Mapping[str, Any]) -> list[str]:
    problems = []
    shapes: dict[int, tuple[int, ...]] = {}  # a shared parameter must get one shape
    for key, param in entries:
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f'"{key}" is not a tensor: received {type(value).__name__}; expected a torch.Tensor '
                            f"of shape {param.shape} (-1 = any size)")
            continue
        shape = tuple(value.shape)
        fits = len(shape) == len(param.shape) and all(k in (-1, g) for k, g in zip(param.shape, shape))
        if not fits or shapes.setdefault(id(param), shape) != shape:
            problems.append(f"size mismatch for {key}: copying a tensor of shape {shape} from the state dict, "
                            f"but the parameter {param.path!r} has shape {param.shape} (-1 = not known yet)")
    return problems
