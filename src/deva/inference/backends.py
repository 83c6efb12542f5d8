"""Propagation backends by name: the ``propagator=`` option of the tools.

Every backend implements :class:`~deva.inference.backend.PropagationBackend`, so the decoupled
tracker and first-frame VOS run on any of them unchanged:

- ``deva``: this package's memory network (:class:`~deva.inference.propagator.Propagator`);
- ``hold``: no network, each object keeps its last mask (:class:`~deva.inference.hold.HoldBackend`),
  the "copy the first mask" baseline;
- ``sam2``, ``sam3``, ``edgetam``: SAM 2, SAM 3's tracker and EdgeTAM through ``transformers``
  (:class:`~deva.inference.sam_video.SamVideoBackend`), their model from ``source`` (a hub id
  or a ``save_pretrained`` folder; None: the family's default hub id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from deva.inference.backend import PropagationBackend
from deva.inference.hold import HoldBackend
from deva.inference.memory import MemoryConfig
from deva.inference.network import InferenceNetwork
from deva.inference.options import InferenceOptions
from deva.inference.propagator import Propagator
from deva.inference.sam_video import FAMILIES, load_sam_video
from deva.modeling.propagation import PropagationModel

log = logging.getLogger(__name__)

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


def _sam_family(name: str) -> Callable[..., PropagationBackend]:
    def make(
        model: PropagationModel | InferenceNetwork | None,
        memory: MemoryConfig,
        mem_every: int,
        options: InferenceOptions | None,
        *,
        source: str | None = None,
        local_files_only: bool | None = None,
    ) -> PropagationBackend:
        options = options or InferenceOptions()
        device = options.torch_device()
        on_cpu = device.type == "cpu" or options.autocast is None
        dtype = torch.float32 if on_cpu else options.autocast
        return load_sam_video(
            name, source, device=device, dtype=dtype, local_files_only=local_files_only
        )

    return make


BACKENDS: dict[str, Callable[..., PropagationBackend]] = {
    "deva": _deva,
    "hold": _hold,
    **{name: _sam_family(name) for name in FAMILIES},
}


def check_backend(name: str) -> str:
    """``name`` if it is a known backend, else a one-line error listing them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown propagator {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def needs_model(name: str) -> bool:
    """Whether backend ``name`` runs this package's propagation network."""
    return check_backend(name) == "deva"


def backend_name(backend: PropagationBackend) -> str:
    """The registry name of ``backend`` (``deva``, ``hold``, ``sam2``, ...), else its class
    name."""
    if isinstance(backend, Propagator):
        return "deva"
    name = getattr(backend, "name", None)
    return name if isinstance(name, str) else type(backend).__name__


def make_backend(
    name: str,
    model: PropagationModel | InferenceNetwork | None,
    memory: MemoryConfig | None = None,
    *,
    mem_every: int = 5,
    options: InferenceOptions | None = None,
    source: str | None = None,
    local_files_only: bool | None = None,
) -> PropagationBackend:
    """A fresh backend ``name`` (see the module docstring) with these memory settings;
    ``source`` and ``local_files_only`` say where a SAM-family backend's model comes from."""
    factory = BACKENDS[check_backend(name)]
    if name in FAMILIES:
        return factory(
            model,
            memory or MemoryConfig(),
            mem_every,
            options,
            source=source,
            local_files_only=local_files_only,
        )
    if source:
        log.warning("propagator_model=%s is ignored by propagator=%s", source, name)
    return factory(model, memory or MemoryConfig(), mem_every, options)
