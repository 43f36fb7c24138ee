"""Backend discovery, selection and lazy loading.

Backends are found through the ``deferral.backends`` entry-point group by name; a plugin
module is imported only when its backend is asked about, and its framework only when the
backend is selected for a model (first use of its op namespace or storage). Each loaded
backend gets its own :class:`pluggy.PluginManager`.

The default backend is, in order: the innermost ``with use_backend(...)``, the last
``set_backend(...)``, the ``DEFERRAL_BACKEND`` environment variable, then ``"numpy"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import threading
from collections.abc import Iterator
from typing import Any

import pluggy

from . import hookspec as _spec
from .errors import BackendNotFoundError

__all__ = [
    "ENTRY_POINT_GROUP",
    "REQUIRED_HOOKS",
    "Backend",
    "available_backends",
    "get_backend",
    "load_backend",
    "register_backend",
    "set_backend",
    "unregister_backend",
    "use_backend",
]

#: The entry-point group a backend distribution registers its plugin module under.
ENTRY_POINT_GROUP = "deferral.backends"
_ENV = "DEFERRAL_BACKEND"
_DEFAULT = "numpy"

_lock = threading.RLock()
_plugins: dict[str, Any] = {}  # name -> loaded plugin module/object (registered or from entry points)
_backends: dict[str, Backend] = {}  # name -> ready backend (framework checked)
_selected: str | None = None
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("deferral_backend", default=None)


class Backend:
    """A loaded backend: its :class:`~deferral.hookspec.BackendInfo`, op namespace and hooks.

    Obtained from :func:`load_backend`; models keep the name and look it up again after
    unpickling. The op namespace is resolved once (``backend.ops``).
    """

    def __init__(self, plugin: Any, info: _spec.BackendInfo, manager: pluggy.PluginManager) -> None:
        self.plugin = plugin
        self.info = info
        self.name = info.name
        self._hook = manager.hook
        self._ops: Any = None
        # Called on every forward pass: resolved once, out of pluggy's dispatch.
        self._is_native = _direct(manager, "deferral_is_native", ("value",))
        self._to_native = _direct(manager, "deferral_to_native", ("value", "dtype", "device"))
        self._to_numpy = _direct(manager, "deferral_to_numpy", ("value",))
        self._from_numpy = _direct(
            manager, "deferral_parameter_from_numpy", ("array", "dtype", "device", "trainable", "owned")
        )
        self._materialize = _direct(manager, "deferral_materialize", ("request",))
        self.has_native = bool(manager.hook.deferral_native.get_hookimpls())

    def __repr__(self) -> str:
        return f"<deferral backend {self.name!r}>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return load_backend, (self.name,)

    @property
    def ops(self) -> Any:
        """The op namespace (imports the framework on first access)."""
        if self._ops is None:
            from .ops import check_namespace

            self._ops = check_namespace(self.name, self._hook.deferral_ops())
        return self._ops

    def canonical_device(self, device: str | None) -> str:
        """Validate ``device`` for this backend and return its canonical spelling."""
        if device is not None and not isinstance(device, str):
            device = str(device)
        found = self._hook.deferral_canonical_device(device=device)
        if found is not None:
            return str(found)
        if device in (None, self.info.default_device):
            return self.info.default_device
        raise ValueError(
            f"backend {self.name!r} cannot place parameters on device {device!r}; "
            f"it supports {self.info.default_device!r}."
        )

    def canonical_dtype(self, dtype: object) -> str:
        """Validate a parameter dtype for this backend and return its canonical name."""
        from ._dtypes import canonical_dtype

        name = canonical_dtype(dtype)
        if name not in self.info.dtypes:
            raise TypeError(
                f"backend {self.name!r} does not support dtype {name}; it supports "
                f"{', '.join(self.info.dtypes)}. Pick one of those or another backend."
            )
        return name

    def is_native(self, value: Any) -> bool:
        return bool(self._is_native(value))

    def to_native(self, value: Any, dtype: str | None, device: str) -> Any:
        return self._to_native(value, dtype, device)

    def to_numpy(self, value: Any) -> Any:
        return self._to_numpy(value)

    def parameter_from_numpy(self, array: Any, dtype: str, device: str, trainable: bool,
                             owned: bool = False) -> Any:
        """The backend's parameter holding ``array`` (see :func:`~deferral.hookspec.deferral_parameter_from_numpy`;
        ``owned``: the array is the core's to give away)."""
        return self._from_numpy(array, dtype, device, trainable, owned)

    @property
    def has_materialize_native(self) -> bool:
        """Whether the backend fills framework models (:func:`deferral.materialize` of a module)."""
        return bool(self._hook.deferral_materialize_native.get_hookimpls())

    def materialize_native(self, native: Any, requests: dict[str, _spec.MaterializeRequest]) -> Any:
        """Fill the framework model ``native`` in place (see :func:`deferral.materialize`)."""
        return self._hook.deferral_materialize_native(native=native, requests=requests)

    def collective(self, values: list[Any]) -> _spec.Collective | None:
        """How processes cooperate over ``values`` when some are spread over them, else ``None``."""
        return self._hook.deferral_collective(values=values)

    def native(self, block: Any) -> Any:
        """The framework's own model object for ``block`` (see :func:`deferral.native`)."""
        return self._hook.deferral_native(block=block)

    def materialize(self, request: _spec.MaterializeRequest) -> Any:
        out = self._materialize(request)
        if out is None:
            out = self.parameter_from_numpy(
                request.host_values().reshape(request.shape),
                request.dtype,
                request.device,
                request.trainable,
                True,
            )
        return out


def _direct(manager: pluggy.PluginManager, name: str, args: tuple[str, ...]) -> Any:
    """The single implementation of a firstresult hook as a plain function, else the hook call."""
    caller = getattr(manager.hook, name)
    impls = caller.get_hookimpls()
    if len(impls) == 1 and not impls[0].hookwrapper and not impls[0].wrapper and tuple(impls[0].argnames) == args:
        return impls[0].function
    return lambda *values: caller(**dict(zip(args, values)))


def _entry_points() -> dict[str, Any]:
    import importlib.metadata  # imported here: it costs ~15 ms, and `import deferral` stays cheap

    found: dict[str, Any] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _names() -> list[str]:
    return sorted(set(_entry_points()) | set(_plugins))


def _plugin(name: str) -> Any:
    """Return the plugin object for ``name``, importing its module (not its framework)."""
    with _lock:
        if name in _plugins:
            return _plugins[name]
        ep = _entry_points().get(name)
        if ep is None:
            known = ", ".join(_names()) or "(none installed)"
            raise BackendNotFoundError(
                f"unknown backend {name!r}. Choose one of: {known}. A third-party backend is "
                f"installed as a package that registers a {ENTRY_POINT_GROUP!r} entry point."
                f"{_chosen_by_environment(name)}"
            )
        _plugins[name] = plugin = ep.load()
        return plugin


#: Hooks every backend must implement; the others have defaults in the core.
REQUIRED_HOOKS = (
    "deferral_backend_info",
    "deferral_ops",
    "deferral_is_native",
    "deferral_to_native",
    "deferral_to_numpy",
    "deferral_parameter_from_numpy",
)


def _manager(plugin: Any) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(_spec.PROJECT)
    manager.add_hookspecs(_spec)
    manager.register(plugin)
    manager.check_pending()
    missing = [h for h in REQUIRED_HOOKS if not getattr(manager.hook, h).get_hookimpls()]
    if missing:
        raise pluggy.PluginValidationError(
            plugin,
            f"backend plugin {plugin!r} does not implement the required hooks "
            f"{', '.join(missing)} (see deferral.hookspec).",
        )
    return manager


def _info(name: str, plugin: Any, manager: pluggy.PluginManager) -> _spec.BackendInfo:
    info = manager.hook.deferral_backend_info()
    if not isinstance(info, _spec.BackendInfo):
        raise BackendNotFoundError(
            f"backend plugin {plugin!r} registered as {name!r} returned {info!r} from "
            "deferral_backend_info; expected a deferral.hookspec.BackendInfo."
        )
    if info.name != name:
        raise BackendNotFoundError(
            f"backend plugin {plugin!r} is registered as {name!r} but calls itself {info.name!r}; "
            "the entry point's name and BackendInfo.name must agree."
        )
    return info


def _chosen_by_environment(name: str) -> str:
    """A sentence for errors about ``name`` when the ``DEFERRAL_BACKEND`` variable chose it."""
    if _override.get() is None and _selected is None and os.environ.get(_ENV, "").strip() == name:
        return (
            f" The backend was chosen by the environment variable {_ENV}={os.environ[_ENV]!r}: "
            f"set it to an installed backend, or unset it to use {_DEFAULT!r}."
        )
    return ""


def _missing(info: _spec.BackendInfo) -> list[str]:
    return [mod for mod in info.requires if importlib.util.find_spec(mod) is None]


def available_backends() -> list[str]:
    """Names of the backends whose plugin and framework are installed, sorted.

    Loads plugin modules (which import no framework) and imports no framework itself.

    Example:
        >>> import deferral
        >>> "numpy" in deferral.available_backends()
        True
    """
    names = []
    for name in _names():
        try:
            plugin = _plugin(name)
            info = _info(name, plugin, _manager(plugin))
        except (ImportError, BackendNotFoundError, pluggy.PluginValidationError):
            continue
        if not _missing(info):
            names.append(name)
    return names


def load_backend(name: str) -> Backend:
    """Return the ready :class:`Backend` called ``name``.

    Raises:
        BackendNotFoundError: for an unknown name (listing the known ones) or a backend whose
            framework is not installed (giving the install command).
    """
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a backend is selected by name (a str); received {name!r}")
    backend = _backends.get(name)
    if backend is not None:
        return backend
    with _lock:
        if name in _backends:
            return _backends[name]
        plugin = _plugin(name)
        manager = _manager(plugin)
        info = _info(name, plugin, manager)
        missing = _missing(info)
        if missing:
            from ._install import install_command

            hint = f" Install it with: {install_command(info.install)}" if info.install else ""
            raise BackendNotFoundError(
                f"backend {name!r} needs {', '.join(missing)}, which is not installed.{hint} "
                f"Installed backends: {', '.join(available_backends()) or '(none)'}."
                f"{_chosen_by_environment(name)}"
            )
        _backends[name] = backend = Backend(plugin, info, manager)
        return backend


def register_backend(plugin: Any, name: str | None = None) -> str:
    """Register a backend plugin object in this process, without an entry point.

    Meant for tests and notebooks; a distributed backend uses an entry point. Returns the
    backend's name (``BackendInfo.name``).

    Raises:
        ValueError: if another plugin is already registered under that name.
    """
    manager = _manager(plugin)
    info = manager.hook.deferral_backend_info()
    name = name or getattr(info, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{plugin!r}: deferral_backend_info must return a BackendInfo with a name")
    _info(name, plugin, manager)
    with _lock:
        existing = _plugins.get(name)
        if existing is not None and existing is not plugin:
            raise ValueError(f"a backend named {name!r} is already registered ({existing!r})")
        if existing is None and name in _entry_points():
            raise ValueError(f"a backend named {name!r} is already installed through an entry point")
        _plugins[name] = plugin
        _forget(name)
    return name


def unregister_backend(name: str) -> None:
    """Forget a backend registered with :func:`register_backend` (tests use this)."""
    with _lock:
        _plugins.pop(name, None)
        _forget(name)


def _forget(name: str) -> None:
    """Drop a loaded backend and the array types dispatched to it."""
    from . import _dispatch

    _backends.pop(name, None)
    _dispatch.clear()


def set_backend(name: str | None) -> None:
    """Make ``name`` the default backend of this process (``None`` restores the default).

    Raises:
        BackendNotFoundError: if the backend is unknown or its framework is missing.
    """
    global _selected
    if name is not None:
        load_backend(name)
    _selected = name


def get_backend() -> str:
    """The name of the backend a model initialized now would be bound to."""
    name = _override.get() or _selected or os.environ.get(_ENV) or _DEFAULT
    return name.strip()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Within the block, make ``name`` the default backend (for this thread/task only).

    Example:
        >>> import deferral
        >>> with deferral.use_backend("numpy"):
        ...     deferral.get_backend()
        'numpy'
    """
    load_backend(name)
    token = _override.set(name)
    try:
        yield name
    finally:
        _override.reset(token)
