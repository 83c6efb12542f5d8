"""How inference runs, apart from what it computes: device, precision, layout, kernels, batching.

One frozen :class:`InferenceOptions` travels from the command line (or the caller) to the
network that does the work (:class:`~deva.inference.network.InferenceNetwork`); nothing below
takes these settings as loose arguments. Which reduced precisions a device supports is checked
by :func:`deva.modeling.inference_model.check_autocast`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from deva.modeling.inference_model import check_autocast

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


@dataclass(frozen=True)
class InferenceOptions:
    """Runtime settings of inference; none of them is an algorithm setting.

    Attributes:
        device: ``auto`` (CUDA, then MPS, then CPU) or a torch device name; used by the code
            that places the model (:meth:`torch_device`).
        autocast: mixed-precision dtype (``torch.bfloat16`` / ``torch.float16``) or None
            (float32). bf16 on a CPU needs native support; fp16 on a CPU is refused.
        channels_last: channels-last layout of the inference copy (None: on for the CPU,
            oneDNN's fastest layout there and the one Winograd convolutions produce).
        winograd: the wide 3×3 convolutions by Winograd's F(4×4, 3×3) (None: on for float32
            on the CPU unless ``compile``).
        compile: ``torch.compile`` the copy's sub-networks (GPU, long runs: the first frames,
            and the first frame after the object count changes, pay the compilation).
        chunk_size: objects per network pass (-1: all at once).
        query_chunk: query pixels per chunk of the top-k memory read (None: 64 on the CPU,
            all at once elsewhere).
        plain: run the model itself — no folded batch norm, no cast weights, no
            channels-last, no Winograd — the reference path of benchmarks and comparisons.
    """

    device: str = "auto"
    autocast: torch.dtype | None = None
    channels_last: bool | None = None
    winograd: bool | None = None
    compile: bool = False
    chunk_size: int = -1
    query_chunk: int | None = None
    plain: bool = False

    def torch_device(self) -> torch.device:
        """``device`` as a torch device (``auto``: CUDA, then MPS, then CPU)."""
        return pick_device(self.device)

    def resolved(self, device: torch.device | str) -> InferenceOptions:
        """These options for a model on ``device``: defaults filled in, combinations checked
        (``ValueError`` with one line when a choice does not apply there)."""
        device = torch.device(device)
        check_autocast(self.autocast, device)
        if self.query_chunk is not None and self.query_chunk < 1:
            raise ValueError(f"query_chunk must be >= 1 or None, got {self.query_chunk}")
        if self.plain:
            if self.winograd or self.compile:
                raise ValueError("plain=True runs the model itself: no winograd, no compile")
            return dataclasses.replace(self, channels_last=False, winograd=False)
        on_cpu = device.type == "cpu"
        channels_last = on_cpu if self.channels_last is None else self.channels_last
        winograd = self.winograd
        if winograd is None:
            winograd = self.autocast is None and on_cpu and not self.compile
        elif winograd and (self.autocast is not None or not on_cpu):
            raise ValueError("winograd=True is for float32 inference on the CPU only")
        elif winograd and self.compile:
            raise ValueError("winograd=True and compile=True exclude each other")
        return dataclasses.replace(self, channels_last=channels_last, winograd=winograd)

    def autocast_context(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """Autocast to ``autocast`` on ``device``'s type, or nothing for float32."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.autocast)


def autocast_dtype(name: str | None, device: torch.device | str) -> torch.dtype | None:
    """The mixed-precision dtype for ``amp=name`` (``none`` | ``bf16`` | ``fp16``) on
    ``device``; ``ValueError`` (one line) for an unknown name or one the device lacks."""
    key = "none" if name is None else str(name).lower()
    if key not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    dtype = AMP_DTYPES[key]
    check_autocast(dtype, device)
    return dtype


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; otherwise the named device."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
