"""The op declarations: one record per op, and everything derived from the records.

Each op of :mod:`deferral.ops` is declared once, by decorating its public function::

    @op("core", shape=_same)
    def relu(x: Array) -> Array:
        \"\"\"``max(x, 0)``.\"\"\"
        return _ops(x).relu(x)

The decorator records the op's name (the function's), family, public signature and docstring
(the function's own), and its **shape rule**: the op's semantics on :class:`~deferral.TensorSpec`
values, called with exactly the arguments the public function passes to a backend. The rule's
signature is therefore the backend's signature, and its annotations are the types a backend
receives. The function itself is returned unchanged: a call costs the function body and
nothing else.

From the records come the family tuples and ``OP_NAMES`` (:func:`names`), the shape-only
namespace (:func:`shape_namespace`), the load-time check of a backend's namespace
(:func:`check_namespace`) and the typed protocol of a backend's namespace
(:func:`render_protocol`, written to ``deferral/_protocol.py`` by :func:`write_protocol`: run
``python -c "from deferral._opdef import write_protocol; write_protocol()"`` after changing a
declaration; a test fails while the file is stale).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "FAMILIES", "OpDef", "check_namespace", "implements", "names", "op", "render_protocol", "shape_namespace",
    "write_protocol",
]

#: The op families, in declaration order. Backends must implement every ``core`` op; the
#: others are optional (a missing one raises ``NotImplementedError`` naming it when called).
FAMILIES: tuple[str, ...] = ("core", "conv", "norm", "seq")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class OpDef:
    """One op: its name, family, public function and shape rule."""

    name: str
    family: str
    function: Callable[..., Any]
    shape: Callable[..., Any]

    @property
    def required(self) -> bool:
        """Whether every backend must implement it (the ``core`` family)."""
        return self.family == "core"

    @property
    def summary(self) -> str:
        """The first line of the public function's docstring."""
        return (inspect.getdoc(self.function) or "").split("\n", 1)[0]


#: Every declared op by name, in declaration order.
DEFS: dict[str, OpDef] = {}


def op(family: str, shape: Callable[..., Any]) -> Callable[[F], F]:
    """Declare the decorated public function as an op of ``family`` with shape rule ``shape``.

    Raises:
        ValueError: for an unknown family or a name declared twice.
    """
    if family not in FAMILIES:
        raise ValueError(f"op family {family!r} is not one of {', '.join(FAMILIES)}")

    def declare(function: F) -> F:
        name = function.__name__
        if name in DEFS:
            raise ValueError(f"op {name!r} is declared twice")
        DEFS[name] = OpDef(name, family, function, shape)
        return function

    return declare


def names(family: str | None = None) -> tuple[str, ...]:
    """The declared op names of ``family`` (every op when None), in declaration order."""
    return tuple(n for n, d in DEFS.items() if family is None or d.family == family)


class Namespace:
    """An op namespace made of given functions, one attribute per op name."""

    def __init__(self, label: str, functions: Mapping[str, Callable[..., Any]]) -> None:
        self._label = label
        self.__dict__.update(functions)

    def __repr__(self) -> str:
        return f"<{self._label} ops>"


def shape_namespace() -> Namespace:
    """The namespace shape-only execution runs on: every op's shape rule under its name."""
    return Namespace("shape-only", {n: d.shape for n, d in DEFS.items()})


# -- a backend's namespace ---------------------------------------------------------------
def check_namespace(backend: str, namespace: Any) -> Any:
    """Validate a backend's op namespace and return the one the core calls.

    Raises:
        TypeError: if ``namespace`` lacks one of the required (core) ops, naming them.
    """
    missing = [n for n, d in DEFS.items() if d.required and not callable(getattr(namespace, n, None))]
    if missing:
        raise TypeError(
            f"backend {backend!r}: its op namespace {namespace!r} lacks {', '.join(missing)}; "
            "every name in deferral.ops.CORE_OPS must be a callable."
        )
    absent = [n for n in DEFS if not callable(getattr(namespace, n, None))]
    if not absent:
        return namespace
    return _Completed(backend, namespace, absent)


class _Completed:
    """A namespace whose missing optional ops raise a clear ``NotImplementedError``."""

    def __init__(self, backend: str, namespace: Any, absent: list[str]) -> None:
        self.wrapped = namespace
        self.absent = frozenset(absent)
        for name in DEFS:
            setattr(self, name, getattr(namespace, name) if name not in absent else _absent(backend, name))

    def __repr__(self) -> str:
        return f"<ops of {self.wrapped!r}, lacking {', '.join(sorted(self.absent))}>"


def _absent(backend: str, name: str) -> Callable[..., Any]:
    def missing_op(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"backend {backend!r} does not implement the op {name!r}, which this layer needs. "
            "Use a backend that does (numpy, torch and tensorflow implement every op)."
        )

    missing_op.__name__ = name
    return missing_op


def implements(namespace: Any, name: str) -> bool:
    """Whether a resolved op namespace really provides ``name``."""
    return not (isinstance(namespace, _Completed) and name in namespace.absent)


# -- the typed protocol ------------------------------------------------------------------
_HEADER = '''\
"""The typed protocol of a backend's op namespace (generated by ``deferral._opdef.write_protocol``).

Do not edit: it is rendered from the op declarations in :mod:`deferral.ops` (each op's shape
rule gives the signature a backend receives, its public function the summary line).
Arguments are passed positionally; sequences arrive as tuples, lists of arrays as lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["OpNamespace"]

Array = Any


class OpNamespace(Protocol):
    """What ``deferral_ops()`` returns: one callable per op (a module of functions will do).

    Required: the ``core`` family; ``conv``, ``norm`` and ``seq`` are optional (see
    :data:`deferral.ops.CORE_OPS`). It states each op's signature (the first-party modules do not type-check against it yet).
    """
'''


def _method(d: OpDef) -> str:
    sig = inspect.signature(d.shape)
    params = ["self"] + [f"{p.name}: {p.annotation}" for p in sig.parameters.values()]
    # Positional-only: a backend may name its parameters as it likes.
    return (
        f"\n    def {d.name}({', '.join(params)}, /) -> {sig.return_annotation}:\n"
        f'        """{d.family}: {d.summary}"""\n'
        "        ...\n"
    )


def render_protocol() -> str:
    """The source of ``deferral/_protocol.py`` for the current declarations."""
    return _HEADER + "".join(_method(d) for d in DEFS.values())


PROTOCOL_PATH = Path(__file__).with_name("_protocol.py")


def write_protocol() -> None:
    """Rewrite ``deferral/_protocol.py`` from the declarations (a maintainer's command)."""
    from . import ops  # noqa: F401  (registers the declarations)

    PROTOCOL_PATH.write_text(render_protocol(), encoding="utf-8")
