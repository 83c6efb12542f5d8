"""3×3 convolutions by Winograd's minimal filtering F(4×4, 3×3), for fp32 inference on the CPU.

A 3×3 convolution producing a 4×4 output tile from a 6×6 input tile needs 144 multiplies per
channel pair computed directly, 36 in the Winograd domain (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016; interpolation points 0, ±1, ±2, ∞):

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

summed over input channels, which turns the convolution into 36 independent matrix products
(tiles × C_in) @ (C_in × C_out). The filter transform ``G g Gᵀ`` is done once, in float64,
when the module is built. The input and output transforms are small dense matrix products;
the work is split into bands of tile rows so that the transformed tensors of a band stay in
the CPU caches (without that the transforms are memory-bound and eat the gain).

Exact in exact arithmetic; in float32 the result differs from a direct convolution by about
1e-5 of the output's magnitude (a direct one: about 2e-6), which the benchmark's mask checks
measure. On the published decoder's stride-16 and stride-8 convolutions it is about 2× faster
than oneDNN's direct convolution on AVX-512 (see ``deva-benchmark``); convolutions with
few channels gain nothing and are left alone (:func:`worth_winograd`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deva.modeling.modules import GroupedConv2d

_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_G = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)
_AT = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)
TILE = 4  # output tile side
WINDOW = 6  # input tile side
MIN_IN_CHANNELS = 128
MIN_OUT_CHANNELS = 64
# Per-call filters of at most this many elements (32 MiB in float32, small enough for the
# allocator to reuse without page faults) are made whole, once per call; larger ones (the
# published decoder's stride-16 convolutions) one block of FILTER_BLOCK outputs at a time,
# inside each band of LARGE_BAND_TILES tiles (fewer repeats of the transform).
WHOLE_FILTER_LIMIT = 2**23
FILTER_BLOCK = 128
LARGE_BAND_TILES = 1024


def is_same_3x3(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain (or object-grouped) 3×3, stride 1, padding 1 convolution."""
    return (
        type(conv) in (nn.Conv2d, GroupedConv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def worth_winograd(conv: nn.Module) -> bool:
    """Whether Winograd pays off for ``conv`` on the CPU (narrow ones are faster direct)."""
    return (
        is_same_3x3(conv)
        and conv.in_channels >= MIN_IN_CHANNELS
        and conv.out_channels >= MIN_OUT_CHANNELS
    )


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) filters → (36, C_in, C_out) Winograd-domain filters (float64 math)."""
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = g @ weight.double() @ g.T  # (C_out, C_in, 6, 6)
    return (
        u.permute(2, 3, 1, 0)
        .reshape(WINDOW * WINDOW, weight.shape[1], weight.shape[0])
        .to(weight.dtype)
    )


class WinogradConv2d(nn.Module):
    """Inference-only replacement of a 3×3 convolution (plain or grouped over objects).

    Accepts (B, C, H, W) or, for a :class:`GroupedConv2d`, (B, N, C, H, W) inputs, any
    memory format; returns channels-last outputs.

    Winograd-domain filters are 4× the size of the weights. With ``store_filters`` (the
    default) they are computed once; without, each call transforms the weights (which are
    then shared with ``conv``, not copied) one block of output channels at a time — slower
    (the published decoder's 1024 → 1536 convolution at stride 16: ~20–40 ms more per call,
    ~15–20 %) but without the filters' memory: the choice for modules that run every few
    frames only (the mask encoder) and where memory matters (the inference copy makes all its
    filters per call: whole, once per call, up to :data:`WHOLE_FILTER_LIMIT` elements, at
    ~1 ms per 256 × 256 convolution).
    """

    def __init__(
        self, conv: nn.Conv2d, *, band_tiles: int = 128, store_filters: bool = True
    ) -> None:
        super().__init__()
        if not is_same_3x3(conv):
            raise ValueError(f"not a 3×3 stride-1 padding-1 convolution: {conv}")
        self.grouped = isinstance(conv, GroupedConv2d)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.band_tiles = band_tiles
        weight = conv.weight.detach()
        g = torch.tensor(_G, dtype=torch.float64)
        bt = torch.tensor(_BT, dtype=torch.float64)
        at = torch.tensor(_AT, dtype=torch.float64)
        self.register_buffer("kg", torch.kron(g, g).to(weight))  # vec(G w Gᵀ) = kg vec(w)
        self.register_buffer("kb", torch.kron(bt, bt).to(weight))
        self.register_buffer("ka", torch.kron(at, at).to(weight))
        self.register_buffer("bias", conv.bias.detach() if conv.bias is not None else None)
        self.register_buffer("u", filter_transform(weight).contiguous() if store_filters else None)
        # Per-call filters read the weights: the same storage as ``conv.weight``, no copy.
        self.register_buffer("weight", None if store_filters else weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._grouped(x, relu=False)

    def forward_relu(self, x: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
        """``forward(relu(x))`` without a separate ReLU pass over ``x``. With ``overwrite``
        (``x`` is a temporary the caller no longer needs), the result may be written into
        ``x``'s memory instead of a fresh tensor (when shapes and layout allow)."""
        return self._grouped(x, relu=True, overwrite=overwrite)

    def _grouped(self, x: torch.Tensor, *, relu: bool, overwrite: bool = False) -> torch.Tensor:
        flat = x.flatten(0, 1) if self.grouped else x
        target = flat if overwrite and self._fits(flat) else None
        out = self.conv_slice(flat, relu=relu, out=target)
        return out.view(x.shape[:2] + out.shape[1:]) if self.grouped else out

    def _fits(self, x: torch.Tensor) -> bool:
        """Whether the output can overwrite ``x`` (same shape, channels-last, whole tiles)."""
        return (
            self.in_channels == self.out_channels
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[-2] % TILE == 0
            and x.shape[-1] % TILE == 0
        )

    def conv_slice(
        self,
        x: torch.Tensor,
        channels: slice | None = None,
        *,
        bias: bool = True,
        relu: bool = False,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The convolution of (B, C, H, W) ``x`` (of ``relu(x)`` with ``relu``); with
        ``channels``, of only that slice of the input channels (``x`` holds just those);
        written into ``out`` when given (see :func:`winograd_conv3x3`)."""
        part = slice(None) if channels is None else channels
        filters: torch.Tensor | FilterSource
        if self.u is not None:
            filters, band_tiles = self.u[:, part], self.band_tiles
        else:
            assert self.weight is not None
            source = FilterSource(self.weight[:, part], self.kg)
            if source.elements <= WHOLE_FILTER_LIMIT:
                filters, band_tiles = source.block(0, source.out_channels), self.band_tiles
            else:
                filters, band_tiles = source, LARGE_BAND_TILES
        return winograd_conv3x3(
            x,
            filters,
            self.bias if bias else None,
            self.kb,
            self.ka,
            band_tiles=band_tiles,
            relu=relu,
            out=out,
        )

    def extra_repr(self) -> str:
        filters = "stored" if self.u is not None else "per call"
        return f"{self.in_channels}, {self.out_channels}, grouped={self.grouped}, {filters}"


class FilterSource:
    """Weights (K, C, 3, 3) whose Winograd-domain filters are made per block of outputs."""

    def __init__(self, weight: torch.Tensor, kg: torch.Tensor) -> None:
        self.weight, self.kg = weight, kg
        self.in_channels, self.out_channels = weight.shape[1], weight.shape[0]
        self.elements = WINDOW * WINDOW * self.in_channels * self.out_channels

    def block(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """(36, C, stop - start) filters of output channels ``start:stop`` (into ``out``, a
        buffer of at least 36 · C · (stop - start) elements, when given)."""
        w = self.weight[start:stop]
        w9 = w.permute(2, 3, 1, 0).reshape(9, -1)  # (9, C·k), k fastest
        size = WINDOW * WINDOW * w9.shape[1]
        target = None if out is None else out[:size].view(WINDOW * WINDOW, -1)
        return torch.mm(self.kg, w9, out=target).view(36, self.in_channels, stop - start)


def winograd_conv3x3(
    x: torch.Tensor,
    filters: torch.Tensor | FilterSource,
    bias: torch.Tensor | None,
    kb: torch.Tensor,
    ka: torch.Tensor,
    *,
    band_tiles: int = 128,
    relu: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv2d(x, w, bias, padding=1)`` with ``filters`` = ``filter_transform(w)``
    (36, C, K) or a :class:`FilterSource` of ``w``; of ``relu(x)`` with ``relu`` (applied
    while copying the input into its padded buffer).

    ``kb`` = Bᵀ⊗Bᵀ (36×36) and ``ka`` = Aᵀ⊗Aᵀ (16×36) transform whole flattened tiles.
    Returns a channels-last (B, K, H, W) tensor: ``out`` when given, a channels-last tensor
    of that shape whose sides are multiples of 4. ``out`` may be ``x`` itself: each band's
    result is then written after the next band's input has been read, so no input row is
    overwritten before it is used, and no fresh output (a page-faulting allocation at
    stride 4) is needed.
    """
    b, c, h, w = x.shape
    c_in, k, blocks = _filter_blocks(filters)
    if c_in != c:
        raise ValueError(f"expected {c_in} input channels, got {c}")
    nh, nw = -(-h // TILE), -(-w // TILE)
    source = x.permute(0, 2, 3, 1)  # NHWC view (a plain view when x is channels-last)
    exact = h % TILE == 0 and w % TILE == 0
    result, nhwc = _output_buffer(x, k, nh, nw, exact, out)
    out_tiles = nhwc.view(b, nh, TILE, nw, TILE, k)
    rows = max(1, band_tiles // (b * nw))
    # When writing into the input's memory, a band's outputs wait (one segment per block)
    # until the next band's input has been copied.
    deferred = out is not None and _same_memory(out, x)
    work = _Workspace.allocate(x, filters, blocks, k, rows, nh, nw, deferred=deferred)
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for top in range(0, nh, rows):
        bottom = min(nh, top + rows)
        padded = _fill_band(work.band, source, top, bottom, relu=relu)
        _write_tiles(pending)
        v = _input_transform(padded, kb, work, bottom - top, nw)
        for start, stop in blocks:
            y = _output_block(v, filters, start, stop, ka, work, deferred=deferred)
            y = y.view(TILE, TILE, b, bottom - top, nw, stop - start).permute(2, 3, 0, 4, 1, 5)
            target = out_tiles[:, top:bottom, :, :, :, start:stop]
            pending.append((target, y, None if bias is None else bias[start:stop]))
            if not deferred:
                _write_tiles(pending)
    _write_tiles(pending)
    if result is not None:
        return result
    return nhwc[:, :h, :w].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _filter_blocks(
    filters: torch.Tensor | FilterSource,
) -> tuple[int, int, list[tuple[int, int]]]:
    """Input channels, output channels and the (start, stop) output blocks of ``filters``."""
    if isinstance(filters, FilterSource):
        c_in, k = filters.in_channels, filters.out_channels
        blocks = [(s, min(s + FILTER_BLOCK, k)) for s in range(0, k, FILTER_BLOCK)]
    else:
        c_in, k = filters.shape[1], filters.shape[2]
        blocks = [(0, k)]
    return c_in, k, blocks


def _output_buffer(
    x: torch.Tensor, k: int, nh: int, nw: int, exact: bool, out: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The (B, K, H, W) result (None unless the sides are whole tiles) and the NHWC buffer."""
    b, _, h, w = x.shape
    if out is not None:
        if not exact or out.shape != (b, k, h, w):
            raise ValueError(f"out must be a ({b}, {k}, {h}, {w}) tensor with sides % {TILE} == 0")
        if not out.is_contiguous(memory_format=torch.channels_last):
            raise ValueError("out must be channels-last")
    if exact:
        result = (
            out
            if out is not None
            else torch.empty(
                b, k, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last
            )
        )
        return result, result.permute(0, 2, 3, 1)
    return None, x.new_empty(b, TILE * nh, TILE * nw, k)


@dataclass
class _Workspace:
    """Buffers that every band of :func:`winograd_conv3x3` reuses."""

    gathered: torch.Tensor
    transformed: torch.Tensor
    products: torch.Tensor
    outputs: torch.Tensor
    block_buffer: torch.Tensor | None
    band: torch.Tensor

    @classmethod
    def allocate(
        cls,
        x: torch.Tensor,
        filters: torch.Tensor | FilterSource,
        blocks: list[tuple[int, int]],
        k: int,
        rows: int,
        nh: int,
        nw: int,
        *,
        deferred: bool,
    ) -> _Workspace:
        """Buffers for bands of up to ``rows`` tile rows of ``x`` (B, C, H, W)."""
        b, c, _, w = x.shape
        most = b * min(rows, nh) * nw
        widest = max(stop - start for start, stop in blocks)
        area = WINDOW * WINDOW
        gathered = x.new_empty(area, most * c)
        transformed = x.new_empty(area, most * c)
        products = x.new_empty(area, most * widest)
        outputs = x.new_empty(TILE * TILE * most * (k if deferred else widest))
        # One buffer for every block of per-call filters (fresh allocations page-fault).
        block_buffer = None if isinstance(filters, torch.Tensor) else x.new_empty(area * c * widest)
        # The zero-padded input of one band of tile rows at a time (1 pixel of padding, plus
        # what completes the last tiles): a band stays in cache, where a padded copy of the
        # whole input would not.
        band = x.new_empty(b, TILE * min(rows, nh) + 2, TILE * nw + 2, c)
        band[:, :, 0].zero_()
        band[:, :, w + 1 :].zero_()
        return cls(gathered, transformed, products, outputs, block_buffer, band)


def _fill_band(
    band: torch.Tensor, source: torch.Tensor, top: int, bottom: int, *, relu: bool
) -> torch.Tensor:
    """Copy (ReLU applied with ``relu``) tile rows ``top:bottom`` of NHWC ``source`` into the
    zero-padded ``band``; returns the band's used part."""
    h, w = source.shape[1], source.shape[2]
    first = TILE * top - 1  # input row at the band's first padded row
    height = TILE * (bottom - top) + 2
    lo, hi = max(first, 0), min(first + height, h)
    padded = band[:, :height]
    padded[:, : lo - first].zero_()
    padded[:, hi - first :].zero_()
    inside = padded[:, lo - first : hi - first, 1 : w + 1]
    if relu:
        torch.clamp_min(source[:, lo:hi], 0, out=inside)
    else:
        inside.copy_(source[:, lo:hi])
    return padded


def _input_transform(
    padded: torch.Tensor, kb: torch.Tensor, work: _Workspace, tile_rows: int, nw: int
) -> torch.Tensor:
    """(36, tiles, C) Winograd-domain input tiles ``Bᵀ d B`` of a padded band."""
    b, c = padded.shape[0], padded.shape[3]
    count = b * tile_rows * nw
    area = WINDOW * WINDOW
    windows = padded.unfold(1, WINDOW, TILE).unfold(2, WINDOW, TILE)  # b, r, nw, c, 6, 6
    d = work.gathered[:, : count * c]
    d.view(WINDOW, WINDOW, b, tile_rows, nw, c).copy_(windows.permute(4, 5, 0, 1, 2, 3))
    return torch.mm(kb, d, out=work.transformed[:, : count * c]).view(area, count, c)


def _output_block(
    v: torch.Tensor,
    filters: torch.Tensor | FilterSource,
    start: int,
    stop: int,
    ka: torch.Tensor,
    work: _Workspace,
    *,
    deferred: bool,
) -> torch.Tensor:
    """(16, tiles · (stop - start)) output tiles of output channels ``start:stop``."""
    area, count = v.shape[0], v.shape[1]
    width = stop - start
    if isinstance(filters, torch.Tensor):
        u = filters
    else:
        u = filters.block(start, stop, out=work.block_buffer)
    m = torch.bmm(v, u, out=work.products[:, : count * width].view(area, count, width))
    at = TILE * TILE * count * start if deferred else 0
    segment = work.outputs[at : at + TILE * TILE * count * width].view(TILE * TILE, -1)
    return torch.mm(ka, m.view(area, -1), out=segment)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _write_tiles(pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]) -> None:
    """Write each (target, tiles, bias) of ``pending`` (``target = tiles + bias``) and empty
    the list."""
    for target, tiles, bias in pending:
        if bias is None:
            target.copy_(tiles)
        else:
            torch.add(tiles, bias, out=target)
    pending.clear()


def use_winograd(module: nn.Module, *, band_tiles: int = 128, max_stored: int | None = None) -> int:
    """Replace, in place, every convolution of ``module`` for which :func:`worth_winograd`
    holds by a :class:`WinogradConv2d`; returns how many were replaced.

    Convolutions whose Winograd-domain filters would hold more than ``max_stored`` elements
    (``None``: no limit; 0: none stored) make them per call from the shared weights.
    """
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if worth_winograd(child):
                size = WINDOW * WINDOW * child.in_channels * child.out_channels
                store = max_stored is None or size <= max_stored
                fast = WinogradConv2d(child, band_tiles=band_tiles, store_filters=store)
                setattr(parent, name, fast)
                replaced += 1
    return replaced
