"""Training and evaluation data.

Training datasets all yield the same **clip sample** (contract in :mod:`deva.data.sample`):
``frames`` float32 ``(T, 3, H, W)`` ImageNet-normalised, ``masks`` int64 ``(T, H, W)`` with
labels 0 (background) and 1..K (K ≤ 3), ``num_objects`` K, ``info`` ``{name, frame_ids}``.

- :mod:`deva.data.augment`: clip-consistent albumentations pipelines;
- :mod:`deva.data.static`: pseudo-videos from image + mask pairs (static stage);
- :mod:`deva.data.video`: clip sampling, the gap curriculum, the video mix;
- :mod:`deva.data.video_folders`: DAVIS / YouTube-VOS / OVIS / MOSE / BURST / your folders, and
  the published video lists;
- :mod:`deva.data.ovis`: OVIS's instance json → the VOS layout;
- :mod:`deva.data.shards`: webdataset shards and the DDP-safe streaming reader;
- :mod:`deva.data.datamodule`: the Lightning data module;
- :mod:`deva.data.synthetic`: generated videos with exact ground truth.

Submodules are imported explicitly (nothing heavy runs on ``import deva.data``).
"""
