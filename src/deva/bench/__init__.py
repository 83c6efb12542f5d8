"""Speed, memory and mask-equality benchmarks (:mod:`deva.cli.benchmark` is the command line).

One module per suite; :func:`deva.bench.run.run_suites` runs the requested ones,
:func:`deva.bench.report.format_table` turns the result into a Markdown table.

Suites (``suite=propagation|backends|tracker|consensus|memory|training|data|all``, ``tasks=``
is an alias):

- **propagation**: a generated 16:9 video at ``size`` (shorter side) is propagated from its
  first-frame masks by several *variants*, stepped interleaved frame by frame in one process
  (so load from other processes hits all of them alike): ``fp32-reference`` (the plain eager
  model, ``InferenceOptions(plain=True)``), ``fp32`` (inference copy,
  batch norm folded), ``fp32-channels-last``, on the CPU ``fp32-winograd`` and
  ``fp32-winograd-channels-last`` (the default fp32 CPU path), and with ``amp``:
  ``<amp>-reference-autocast`` (autocast over the plain model) and ``<amp>-channels-last``
  (weights cast once); with ``compile`` (default on a GPU) also ``fp32-compiled`` and
  ``<amp>-compiled`` (``torch.compile``; warm-up frames absorb the compilation). Every
  variant's masks are compared with ``fp32-reference``.
- **backends**: the same first-frame propagation by each propagation backend
  (``propagator=deva|hold|sam2|sam3|edgetam``), interleaved; see :mod:`deva.bench.backends`.
- **tracker**: the semi-online tracker over a stream whose segmenter returns ``segments``
  drifting Voronoi segments per frame (or, ``tracker_detections=video``, the generated
  video's own simulated detections: its objects and stuff regions with noise); variants
  ``fp32-reference`` (plain model, one throw-away propagator per alignment: the previous code
  path), ``fp32-reference-batched``
  (plain model, batched alignment: must be identical), ``fp32`` and ``<amp>``; time shares of
  alignment, consensus and merging.
- **consensus**: the in-clip consensus alone on ``clip_size`` partitions.
- **memory**: a long looped video through the small model at low resolution; process RSS and
  stored memory elements per frame, a PNG plot, and whether both are flat once the long-term
  memory is full. Then (CPU) the peak RSS of VOS propagation at ``size`` per ``rss_presets``
  and variant (``fp32-reference``, ``fp32``, ``bf16``), each in a fresh process, and the peak
  RSS against video length (``rss_lengths``) in every tracking mode, with a plot.
- **training**: optimizer step time and samples/s of the training unroll per preset.
- **data**: samples/s of the training input pipelines (static image folders, video folders,
  shards: decode + augment + collate through the data module a run builds) per DataLoader
  worker count, on sources generated at the published video size.

Mask checks: fp32 variants pass when at most 0.01 % of the *decisive* pixels differ (pixels
whose fp32-reference top-2 probability margin is at least ``decisive_margin``; with random
weights many pixels are exact ties that any float reordering flips — the raw count is reported
too); reduced-precision variants pass with mean per-object IoU ≥ 0.99.
"""
