"""``deferral.native(net)`` on the torch backend: the model as a real ``torch.nn.Module``.

:class:`DeferralModule` wraps one block; its children are the modules of the block's children,
under the same names, so the module tree mirrors the block tree and ``state_dict()`` keys are
deferral's structural paths. The tensors registered in each module are the deferral parameters'
own storage (no copy): trainable parameters as parameters, the others (BatchNorm running
statistics) as buffers. The two sides stay in step both ways:

- deferral to torch: every module :meth:`~deferral.Parameter.watch`\\ es the parameters it
  shows, so when deferral materializes, swaps (``force_reinit``, ``set_data``,
  ``load_parameters``) or rolls back a parameter, the module's registered tensor is replaced at
  once. A parameter that has no values yet is registered as torch's own
  ``UninitializedParameter`` (``UninitializedBuffer``), as torch's ``Lazy*`` modules do.
- torch to deferral: ``.to()``, ``.double()``, ``.cuda()`` and assigning a tensor to a
  parameter's attribute hand the new tensors to deferral with
  :meth:`~deferral.Parameter.adopt`; ``train()``/``eval()`` and ``training`` read and write the
  block's own mode.

The forward pass is the block's call: the first one materializes exactly as ``net(x)`` would
(outside any compiler's trace), later ones run the block's fast path, which ``torch.compile``
traces without graph breaks. Once materialized, the modules of the two layers torch has its
own of compute as torch's do, so a compiled call reads nothing of deferral: a ``Sequential``'s
calls its child modules in turn (:class:`SequentialModule`), a ``Dense``'s is
``torch.nn.Linear``'s forward and the activation (:class:`DenseModule`), bit for bit what the
blocks compute.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch.nn.modules.module import _IncompatibleKeys
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from deferral import Parameter, _functional, _lifecycle, ops
from deferral._native import attach
from deferral.errors import DeferralError
from deferral.nn import Block, Dense, Embedding, Sequential
from deferral.nn._activations import activation_on
from deferral.nn._block import native_call, route_calls, routed_block

__all__ = ["BackendMismatchError", "DeferralModule", "DenseModule", "EmbeddingModule", "ModuleChangeError",
           "SequentialModule", "StateDictError", "native_module"]


def _native_args(args: tuple[Any, ...]) -> bool:
    """A lone tensor (or tensor-like, by the input converter's own test): what the converter
    would pass on unchanged, so the call skips it and ``torch.compile`` guards nothing of it.

    Tested on the class, as the converter does: ``isinstance(x, torch.Tensor)`` would reach
    ``torch.Tensor`` by a second path, which ``torch.compile`` guards in Python on every call.
    """
    return len(args) == 1 and getattr(type(args[0]), "__torch_function__", None) is not None


class StateDictError(DeferralError, RuntimeError):
    """A state dict cannot be loaded into a deferral module; nothing was changed.

    A ``RuntimeError``, as torch's own ``load_state_dict`` raises; the message lists every
    problem (missing and unexpected keys, shape mismatches, values that are not tensors).
    """


class BackendMismatchError(DeferralError, ValueError):
    """A deferral module is used while its model is bound to another backend than torch."""


class ModuleChangeError(DeferralError, AttributeError):
    """A change to a deferral module that only its deferral block can make (removing one of
    its parameters, as ``torch.nn.utils.parametrize`` does); nothing was changed."""


# One placeholder per deferred parameter, shared by every module showing it, so that
# ``parameters()`` lists a shared deferred parameter once.
_placeholders: weakref.WeakKeyDictionary[Parameter, torch.Tensor] = weakref.WeakKeyDictionary()


def _placeholder(param: Parameter) -> torch.Tensor:
    """torch's lazy tensor standing for ``param`` until it has values (its dtype and device)."""
    dtype, device = getattr(torch, param.dtype), torch.device(param.device or "cpu")
    found = _placeholders.get(param)
    if found is not None and is_lazy(found) and found.dtype == dtype and found.device == device:
        return found
    # (torch's stubs omit the device and dtype its __new__ takes)
    lazy: Any = UninitializedParameter if param.trainable else UninitializedBuffer
    made: torch.Tensor = lazy(param.trainable, device=device, dtype=dtype)
    _placeholders[param] = made
    return made


def _become(param: Parameter) -> torch.Tensor:
    """``param``'s tensor; the placeholder an optimizer may hold becomes it, as torch's own do.

    torch's lazy modules turn an ``UninitializedParameter`` into a ``Parameter`` in place, so
    an optimizer built before the first call trains the materialized values. Here the
    placeholder takes the new values' storage and becomes the parameter's storage object.
    """
    data = param._data
    waiting = _placeholders.get(param)
    if waiting is None or not is_lazy(waiting) or not isinstance(waiting, UninitializedParameter):
        return data
    waiting.__class__ = torch.nn.Parameter
    waiting.data = data.detach()
    _lifecycle.rebind(param, waiting)
    return waiting


_linear_forward = torch.nn.Linear.forward
_ABSENT = object()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _device_name(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else f"{device.type}:{device.index or 0}"


class _Slots(dict[str, Any]):
    """A module's ``_parameters`` or ``_buffers``: a plain dict whose writes also reach deferral.

    torch replaces registered tensors by item assignment (``module.weight = ...``,
    ``load_state_dict(assign=True)``, ``.to()`` on buffers, and ``torch.func.functional_call``
    or ``torch.export`` swapping in their own tensors for a call); the forward pass reads
    deferral's parameters, so each such tensor is handed to deferral
    (:meth:`deferral.Parameter.adopt`). Reads are the dict's own.
    """

    def __init__(self, owner: DeferralModule, items: Mapping[str, Any]) -> None:
        super().__init__(items)
        self._owner = weakref.ref(owner)

    def __setitem__(self, name: str, tensor: Any) -> None:
        owner = self._owner()
        param = None if owner is None else owner._deferral_params.get(name)
        if param is not None and isinstance(tensor, torch.Tensor):
            _adopt(param, tensor)  # first: a tensor deferral refuses changes nothing
        super().__setitem__(name, tensor)

    def __reduce__(self) -> Any:  # pickled as the plain dict it is
        return dict, (dict(self),)


def _adopt(param: Parameter, tensor: torch.Tensor) -> None:
    """Hand ``tensor`` to deferral as ``param``'s storage unless it already is."""
    lazy = is_lazy(tensor)
    dtype, device = _dtype_name(tensor.dtype), _device_name(tensor.device)
    if (param._data is tensor or (lazy and not param.initialized)) and param.dtype == dtype and (
            param.device == device):
        return
    param.adopt(None if lazy else tensor, dtype, device)


class DeferralModule(torch.nn.Module):
    """A deferral block as a ``torch.nn.Module`` sharing its storage; see :func:`deferral.native`.

    Behaves as any module: ``parameters()``, ``state_dict()``, ``load_state_dict()``,
    ``to()``, hooks, ``torch.compile``, ``torch.export``, DDP. Its repr shows the block types.
    """

    #: Whether ``_parameters`` and ``_buffers`` hand every write to deferral as it happens
    #: (:class:`_Slots`). A module whose steady forward pass reads them instead (as
    #: :class:`DenseModule` does) keeps torch's plain dicts: ``torch.compile`` fetches a dict
    #: subclass's tensors in Python on every call.
    _deferral_relays: ClassVar[bool] = True
    _deferral_block: Block
    # Own parameter name -> the deferral Parameter registered under it.
    _deferral_params: dict[str, Parameter]
    # The serial of the block's call state when a call through this module last found the
    # model on torch (0: none yet): another one (a call on another backend made it) sends the
    # next call through the check.
    _deferral_seen: int

    def __init__(self, block: Block, children: Mapping[str, DeferralModule]) -> None:
        # torch.nn.Module's own: a subclass that is also a torch.nn.Linear (DenseModule) has
        # no values to give Linear.__init__, and needs none (its tensors are the block's).
        torch.nn.Module.__init__(self)
        object.__setattr__(self, "_deferral_block", block)
        object.__setattr__(self, "_deferral_params", dict(block._params.items()))
        object.__setattr__(self, "_deferral_seen", 0)
        for name, child in children.items():
            self._modules[name] = child
        self._link()

    def _link(self) -> None:
        """Register every own parameter's current tensor and watch the parameters."""
        if self._deferral_relays:
            object.__setattr__(self, "_parameters", _Slots(self, self._parameters))
            object.__setattr__(self, "_buffers", _Slots(self, self._buffers))
        self._sync_params()

    def _sync_params(self) -> None:
        """Show exactly the block's own parameters: drop those it no longer has, register the rest."""
        old, new = self._deferral_params, dict(self._deferral_block._params.items())
        for name, param in old.items():
            if new.get(name) is not param:
                dict.pop(self._parameters, name, None)
                dict.pop(self._buffers, name, None)
        object.__setattr__(self, "_deferral_params", new)
        for param in new.values():
            param.watch(self)
            self.parameter_changed(param)

    def block_changed(self) -> None:
        """Follow a change of the block's children or parameters (called by the core): a child
        added after ``deferral.native()`` gets its module, a removed one loses it, a parameter
        added or replaced is registered. Like adding a module to a ``torch.nn.Module``, an
        optimizer built before does not hold the new parameters: build it again."""
        block = self._deferral_block
        for name in [n for n, m in self._modules.items() if isinstance(m, DeferralModule)]:
            if name not in block._children:
                del self._modules[name]
        for name, child in block.children():
            self._modules[name] = native_module(child)
        self._sync_params()

    @property
    def block(self) -> Block:
        """The deferral block this module shows."""
        return self._deferral_block

    # -- deferral -> torch ---------------------------------------------------------------
    def parameter_changed(self, param: Parameter) -> None:
        """Register ``param``'s tensor (or its placeholder) again; called by the core."""
        if param.backend not in (None, "torch"):  # rebound elsewhere: forward() says so
            tensor = None
        elif param.initialized:
            tensor = _become(param)
        else:
            tensor = _placeholder(param)
        for name, mine in self._deferral_params.items():
            if mine is param:  # the dict's own methods: this change comes from deferral
                slots = self._parameters if param.trainable else self._buffers
                if tensor is None:
                    dict.pop(slots, name, None)
                else:
                    dict.__setitem__(slots, name, tensor)

    # -- torch -> deferral ---------------------------------------------------------------
    def _apply(self, fn: Any, recurse: bool = True) -> DeferralModule:
        # torch converts a parameter in place (``param.data = converted``), which no dict
        # write shows: hand every own tensor over again (a no-op where nothing changed).
        super()._apply(fn, recurse)
        self._hand_over()
        return self

    def _registered(self) -> Iterator[tuple[str, Parameter, Any]]:
        """``(own name, parameter, the tensor registered for it or None)`` for each own parameter."""
        for own, param in self.__dict__.get("_deferral_params", {}).items():
            yield own, param, (self._parameters if param.trainable else self._buffers).get(own)

    def _hand_over(self, name: str | None = None) -> None:
        """Hand deferral the tensor registered for each own parameter (or for ``name`` only)
        that is not its storage yet (a no-op where nothing changed)."""
        for own, param, tensor in self._registered():
            if (name is None or own == name) and isinstance(tensor, torch.Tensor):
                _adopt(param, tensor)

    @contextlib.contextmanager
    def _kept(self, name: str) -> Iterator[None]:
        """Registering a tensor as ``name``: if deferral refuses it (a shape the parameter
        cannot have), the module's entry is put back, so nothing has changed."""
        before = [(slots, slots.get(name, _ABSENT)) for slots in (self._parameters, self._buffers)]
        try:
            yield
        except BaseException:
            for slots, tensor in before:
                if tensor is _ABSENT:
                    dict.pop(slots, name, None)
                else:
                    dict.__setitem__(slots, name, tensor)
            raise

    def register_parameter(self, name: str, param: torch.nn.Parameter | None) -> None:
        """As torch's (tensor parallelism registers its sharded parameters so); for one of the
        block's parameters, the new tensor becomes its storage, or, refused, changes nothing."""
        with self._kept(name):
            super().register_parameter(name, param)
            self._hand_over(name)

    def register_buffer(self, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        """As torch's; for one of the block's parameters, the new tensor becomes its storage,
        or, refused, changes nothing."""
        with self._kept(name):
            super().register_buffer(name, tensor, persistent)
            self._hand_over(name)

    def reset_parameters(self) -> None:
        """Regenerate the initial values of this module's parameters and buffers (and its
        descendants'), in place, from their recipes: the bits ``initialize(seed=...)`` gave.

        The FSDP2 recipe ``module.to_empty(device=...)`` then ``module.reset_parameters()``
        works unchanged: a sharded parameter (a DTensor) gets exactly this rank's elements.

        Raises:
            deferral.DeferredInitializationError: for a parameter never initialized, or whose
                shape is not known yet.
        """
        from ._distributed import reset_module

        reset_module(self)

    # -- mode ----------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        """The block's own mode (``block.training``); torch's ``train()``/``eval()`` set it."""
        return self._deferral_block.training

    @training.setter
    def training(self, mode: bool) -> None:
        block = self.__dict__.get("_deferral_block")
        if block is not None:  # torch.nn.Module.__init__ sets it before the block is known
            # torch sets the flag module by module (its train() walks the children itself).
            object.__setattr__(block, "_training", bool(mode))

    def __setattr__(self, name: str, value: Any) -> None:
        """As torch's; replacing a child module (as peft, torch.ao quantization and other
        adapter tools do with ``setattr``) makes the block's calls go through the new module,
        which may call the old one (it then computes the block as before)."""
        block = self.__dict__.get("_deferral_block")
        child = block._children.get(name) if block is not None and name in self._modules else None
        if child is not None and not isinstance(value, torch.nn.Module):
            raise ModuleChangeError(
                f"{type(block).__name__} module: {name!r} is the module of the deferral block "
                f"{child.describe()}, which the forward pass calls; it can be replaced by another "
                f"torch.nn.Module, not by {type(value).__name__}. Remove the block from the deferral "
                "model instead."
            )
        if block is None or name not in self._deferral_params:
            super().__setattr__(name, value)
        else:  # module.weight = ...: deferral takes the tensor, or nothing changes
            with self._kept(name):
                super().__setattr__(name, value)
                self._hand_over(name)
        if child is not None:
            route_calls(child, value)

    def __delattr__(self, name: str) -> None:
        param = self.__dict__.get("_deferral_params", {}).get(name)
        if param is not None:
            raise ModuleChangeError(
                f"{type(self._deferral_block).__name__} module: {name!r} is the deferral parameter "
                f"{param.path!r}, which the forward pass reads; it cannot be removed from the module "
                "(torch.nn.utils.parametrize does this and is not supported on deferral modules). "
                f"Assign a tensor instead (module.{name} = torch.nn.Parameter(...)), or change the "
                "deferral block itself."
            )
        super().__delattr__(name)

    # -- calling -------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The block's call: the first materializes (outside any trace), later ones compute.

        The children run through their modules' ``__call__`` (``deferral.nn._block.native_call``),
        so hooks registered on any module of the tree fire, as in a ``torch.nn`` model.
        """
        block = routed_block(self)
        if block is None:  # called directly, not by its parent block
            block = self._deferral_block
        state = block._state
        if state is None or state.serial != self._deferral_seen:
            return _first_call(self, args, kwargs)
        return native_call(block, args, kwargs, _native_args(args))

    def _deferral_steady(self) -> None:
        """After a call went through the check (:func:`_first_call`), or a parameter changed:
        a kind with a path of its own decides whether its calls may take it."""

    # -- deferred parameters -------------------------------------------------------------
    def has_uninitialized_params(self) -> bool:
        """Whether a parameter of this module or a descendant has no values yet."""
        return any(is_lazy(t) for m in self.modules() for t in (*m._parameters.values(), *m._buffers.values()))

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        # torch's own detaches every tensor, which a placeholder refuses: placeholders go as they are.
        for name, tensor in (*self._parameters.items(), *self._buffers.items()):
            if tensor is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = tensor if keep_vars or is_lazy(tensor) else tensor.detach()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> _IncompatibleKeys:
        """torch's ``load_state_dict``, all or nothing, and completing deferred parameters.

        Every key, shape and value is checked first; with any problem (under ``strict``:
        missing or unexpected keys too) :class:`StateDictError` lists them all and nothing
        changes. Deferred parameters take their shapes and values from the state dict, with no
        dry-run forward; those it lacks (``strict=False``) stay deferred. Returns torch's
        ``(missing_keys, unexpected_keys)``.
        """
        from ._state import load

        return load(self, state_dict, strict, assign)

    # -- copies ----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_deferral_seen"] = 0  # a call state is never copied (the block's is not either)
        for derived in ("_deferral_then", "_deferral_count"):  # found again from the block
            state.pop(derived, None)
        # The block carries the values (deferral's Parameter pickles them); the registered
        # tensors are found again from it.
        for slots in ("_parameters", "_buffers"):
            state[slots] = {k: v for k, v in state[slots].items() if k not in self._deferral_params}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        block = self._deferral_block
        object.__setattr__(self, "_deferral_params", {})
        object.__setattr__(self, "_deferral_seen", 0)
        if block._native is None:
            attach(block, self, "torch")
        route_calls(block, self)
        self._link()

    # -- printing --------------------------------------------------------------------------
    def _get_name(self) -> str:
        return type(self._deferral_block).__name__

    def extra_repr(self) -> str:
        return self._deferral_block._extra_repr()


class SequentialModule(DeferralModule):
    """The module of a :class:`deferral.nn.Sequential`: also ``len``, iteration and indexing,
    as ``torch.nn.Sequential`` (a slice is a ``torch.nn.Sequential`` of the same modules).

    Inside its call each child runs through its own module (see :class:`DeferralModule`), so
    the hooks torch's tools put on them run: FSDP2's gathering of a ``fully_shard``-ed layer's
    parameters, tensor parallelism's input and output redistribution.

    Once the model has all its values, a call of a plain ``Sequential`` with one input is
    ``torch.nn.Sequential``'s: each child module in turn (a child module replaced with
    ``setattr`` is the one called), with nothing of deferral in between, which is what
    ``torch.compile`` then sees. Any other call is the block's: the first one, a subclass with
    its own ``forward``, several inputs, a module tree whose children no longer match the
    block's (one deleted from ``_modules``, or one added).
    """

    # How many child modules a call may run in turn (-1: calls are the block's). One attribute,
    # so a call in another thread never sees half a change.
    _deferral_count: int = -1

    def _deferral_steady(self) -> None:
        block = self._deferral_block
        fast = (block._state is not None and type(block).forward is Sequential.forward
                and list(self._modules) == list(block._children))
        object.__setattr__(self, "_deferral_count", len(self._modules) if fast else -1)

    def call_state_dropped(self) -> None:
        """The block's call state is gone (called by the core): the next call is checked."""
        object.__setattr__(self, "_deferral_count", -1)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Each child module in turn, as ``torch.nn.Sequential``, or the block's call (see
        the class)."""
        modules = self._modules
        if len(args) == 1 and not kwargs and len(modules) == self._deferral_count:
            routed_block(self)  # a call its parent block routed here: taken
            x = args[0]
            for module in modules.values():
                x = module(x)
            return x
        return super().forward(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[torch.nn.Module]:
        return iter(list(self._modules.values()))

    def __getitem__(self, index: int | slice) -> torch.nn.Module:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return torch.nn.Sequential(*modules[index])
        return modules[index]


class DenseModule(DeferralModule, torch.nn.Linear):
    """The module of a :class:`deferral.nn.Dense`: also a ``torch.nn.Linear``.

    Its ``weight`` has ``torch.nn.Linear``'s layout, ``(out_features, in_features)`` (deferral's
    ``(units, in_units)``), and its ``bias`` is ``None`` without one, so tools that recognise
    a linear layer by its class work on it unchanged: tensor parallelism's
    ``ColwiseParallel``/``RowwiseParallel`` (``parallelize_module``), quantization and adapter
    libraries. The tensors are the block's own.

    Once its parameters have values, a call with a tensor is ``torch.nn.Linear``'s own forward
    pass, then the activation (the backend's own function for ``relu``, ``sigmoid``, ``tanh``):
    what ``Dense.forward`` computes, bit for bit, and what ``torch.compile`` sees of a
    ``torch.nn.Linear``. It reads the registered tensors, so a tool that swaps them in
    ``_parameters`` for a call (``torch.func.functional_call``) is obeyed as by torch's own
    modules. Every other call is the block's (:class:`DeferralModule`), computing with the
    registered tensors too (:func:`deferral._functional.substituted`): the first one, which
    materializes, one with a NumPy array or an input the block refuses (its error names the
    layer), a ``Dense`` subclass with its own ``forward``, an activation that is a block of
    its own.
    """

    _deferral_relays = False
    # What a call applies after torch.nn.Linear's forward: nothing (None) or the activation;
    # False: calls are the block's. One attribute, so a call in another thread never sees
    # half a change.
    _deferral_then: Any = False

    def __init__(self, block: Block, children: Mapping[str, DeferralModule]) -> None:
        super().__init__(block, children)
        if "bias" not in self._deferral_params:
            dict.__setitem__(self._parameters, "bias", None)  # as torch.nn.Linear(bias=False)

    def parameter_changed(self, param: Parameter) -> None:
        super().parameter_changed(param)
        self._deferral_steady()

    def _deferral_steady(self) -> None:
        """Decide whether calls may be ``torch.nn.Linear``'s: every own parameter has its
        tensor registered, and the block computes nothing ``Dense.forward`` does not."""
        block = self._deferral_block
        then: Any = False  # the block's calls
        if isinstance(block, Dense) and type(block).forward is Dense.forward and not block._children:
            registered = [tensor for _, _, tensor in self._registered()]
            if registered and all(t is not None and not is_lazy(t) for t in registered):
                then = activation_on(block._act, registered[0])
        object.__setattr__(self, "_deferral_then", then)

    def forward(self, x: Any) -> Any:
        """``torch.nn.Linear``'s forward pass and the activation, or the block's call (see the
        class)."""
        routed_block(self)  # a call its parent block sent here: taken
        # (while a deferral.functional call runs, the block's call reads the values it gives)
        then = self._deferral_then
        if then is not False and not _functional.active and isinstance(x, torch.Tensor) and x.dim() >= 2:
            try:
                y = _linear_forward(self, x)
            except Exception:  # the block's call says what is wrong
                pass
            else:
                return y if then is None else then(y)
        # The block computes with what torch holds: tensors a tool swapped in for a call count
        # for this call only (torch.func.functional_call puts the model's own back itself).
        swapped = {param: tensor for _, param, tensor in self._registered()
                   if isinstance(tensor, torch.Tensor) and not is_lazy(tensor) and param.initialized
                   and tensor is not param._data}
        with _functional.substituted(swapped):
            return DeferralModule.forward(self, x)

    @property
    def in_features(self) -> int:
        """The input size (``-1`` while it is not known)."""
        return int(self._deferral_params["weight"].shape[1])

    @property
    def out_features(self) -> int:
        """The output size (the layer's ``units``)."""
        return int(self._deferral_params["weight"].shape[0])


class EmbeddingModule(DeferralModule, torch.nn.Embedding):
    """The module of a :class:`deferral.nn.Embedding`: also a ``torch.nn.Embedding``.

    Its ``weight`` has ``torch.nn.Embedding``'s layout, ``(num_embeddings, embedding_dim)``
    (deferral's ``(input_dim, output_dim)``), so ``ColwiseParallel``/``RowwiseParallel`` shard it;
    the lookup is the block's (``F.embedding``, with deferral's index checks). torch's options
    it has no counterpart for are shown at their defaults (no ``padding_idx`` or ``max_norm``).
    """

    padding_idx = None
    max_norm = None
    norm_type = 2.0
    scale_grad_by_freq = False
    sparse = False

    @property
    def num_embeddings(self) -> int:
        """The vocabulary size (the layer's ``input_dim``)."""
        return int(self._deferral_params["weight"].shape[0])

    @property
    def embedding_dim(self) -> int:
        """The size of each vector (the layer's ``output_dim``)."""
        return int(self._deferral_params["weight"].shape[1])


#: The module class of each block class that has its own (looked up along the block's MRO).
_KINDS: dict[type[Block], type[DeferralModule]] = {
    Sequential: SequentialModule, Dense: DenseModule, Embedding: EmbeddingModule,
}


def _kind(block: Block) -> type[DeferralModule]:
    return next((_KINDS[c] for c in type(block).__mro__ if c in _KINDS), DeferralModule)


@torch.compiler.disable
def _first_call(module: DeferralModule, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A call that may materialize, or the first since the block's call state changed:
    deferral's own slow path after checking the model is still on torch, never traced.

    Raises:
        BackendMismatchError: if the block's parameters were bound to another backend since.
    """
    block = module._deferral_block
    elsewhere = {p.path: p.backend for p in block.collect_params().values() if p.backend not in (None, "torch")}
    if elsewhere:
        path, backend = next(iter(elsewhere.items()))
        raise BackendMismatchError(
            f"deferral.native: this torch.nn.Module shows {block.describe()}, but its parameter "
            f"{path!r} is now bound to backend {backend!r}, not 'torch' ({len(elsewhere)} parameter(s) "
            f"moved). Initialize the model on torch again (net.initialize(backend='torch', "
            f"force_reinit=True)), or use the model itself on {backend!r}."
        )
    out = native_call(block, args, kwargs)
    state = block._state
    object.__setattr__(module, "_deferral_seen", 0 if state is None else state.serial)
    module._deferral_steady()
    return out


def _meet_tensor_types() -> None:
    """Let the op dispatch meet ``torch.Tensor`` and ``torch.nn.Parameter`` now.

    The dispatch caches each array type the first time an op meets it, and a compiled module
    guards on that cache: were a ``Parameter`` first met later (BatchNorm's training step
    updates its running statistics), every compiled graph would be recompiled once.
    """
    ops.shape(torch.empty(0))
    ops.shape(torch.nn.Parameter(torch.empty(0), requires_grad=False))


def native_module(block: Block) -> DeferralModule:
    """The module tree for ``block`` (a block met twice in the tree gets one module).

    Every block of the tree records its module (``deferral.native(net[0])`` is
    ``deferral.native(net)[0]``) and is called through it inside the tree's calls, so hooks
    on any module fire.
    """
    made: dict[int, DeferralModule] = {}

    def build(b: Block) -> DeferralModule:
        if id(b) not in made:
            found = b._native
            if isinstance(found, DeferralModule) and b._native_backend == "torch":
                made[id(b)] = found  # mirrored before (deferral.native(net[0]) first)
            else:
                children = {name: build(child) for name, child in b.children()}
                made[id(b)] = _kind(b)(b, children)
        return made[id(b)]

    _meet_tensor_types()
    root = build(block)
    for module in made.values():
        attach(module.block, module, "torch")
        route_calls(module.block, module)
    return root


def named_deferral_params(module: DeferralModule) -> Iterator[tuple[str, DeferralModule, str, Parameter]]:
    """``(state-dict key, module, own name, parameter)`` of every registered parameter."""
    for prefix, sub in module.named_modules(remove_duplicate=False):
        if isinstance(sub, DeferralModule):
            for name, param in sub._deferral_params.items():
                yield (f"{prefix}.{name}" if prefix else name), sub, name, param

