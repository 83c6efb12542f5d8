"""Propagation backends by name: the ``propagator=`` option of the tools.

Every backend implements :class:`~deva.inference.backend.PropagationBackend`, so the decoupled
tracker and first-frame VOS run on any of them unchanged:

- ``deva``: this package's memory network (:class:`~deva.inference.propagator.Propagator`);
- ``hold``: no network, each object keeps its last mask (:class:`~deva.inference.hold.HoldBackend`),
  the "copy the first mask" baseline.
"""

from __future__ import annotations

from collections.abc import Callable

from deva.inference.backend import PropagationBackend
from deva.inference.hold import HoldBackend
from deva.inference.memory import MemoryConfig
from deva.inference.network import InferenceNetwork
from deva.inference.options import InferenceOptions
from deva.inference.propagator import Propagator
from deva.modeling.propagation import PropagationModel

DEFAULT_BACKEND = "deva"


def _deva(
    model: PropagationModel | InferenceNetwork | None,
    memory: MemoryConfig,
    mem_every: int,
    options: InferenceOptions | None,
) -> PropagationBackend:
    if model is None:
        raise ValueError("propagator=deva needs a propagation model")
    return Propagator(model, memory, mem_every=mem_every, options=options)


def _hold(
    model: PropagationModel | InferenceNetwork | None,
    memory: MemoryConfig,
    mem_every: int,
    options: InferenceOptions | None,
) -> PropagationBackend:
    return HoldBackend((options or InferenceOptions()).torch_device())


BACKENDS: dict[str, Callable[..., PropagationBackend]] = {"deva": _deva, "hold": _hold}


def check_backend(name: str) -> str:
    """``name`` if it is a known backend, else a one-line error listing them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown propagator {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def needs_model(name: str) -> bool:
    """Whether backend ``name`` runs this package's propagation network."""
    return check_backend(name) == "deva"


def backend_name(backend: PropagationBackend) -> str:
    """The registry name of ``backend`` (``deva``, ``hold``), else its class name."""
    if isinstance(backend, Propagator):
        return "deva"
    if isinstance(backend, HoldBackend):
        return "hold"
    return type(backend).__name__


def make_backend(
    name: str,
    model: PropagationModel | InferenceNetwork | None,
    memory: MemoryConfig | None = None,
    *,
    mem_every: int = 5,
    options: InferenceOptions | None = None,
) -> PropagationBackend:
    """A fresh backend ``name`` (see the module docstring) with these memory settings."""
    return BACKENDS[check_backend(name)](model, memory or MemoryConfig(), mem_every, options)
