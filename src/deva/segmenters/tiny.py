"""Tiny randomly initialised image models in the ``save_pretrained`` layout, for tests and demos.

Each ``save_tiny_*`` function writes a folder that the matching ``from_pretrained`` loads
without any download: ``config.json`` + weights (+ ``preprocessor_config.json`` with a small
input size, + a word-level BERT tokenizer where the model reads text). Their outputs are
random; they exist to exercise the real loading and inference code quickly on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deva.segmenters.hf import require_transformers

TINY_WORDS = (
    "person",
    "bicycle",
    "dog",
    "cat",
    "car",
    "ball",
    "sky",
    "grass",
    "the",
    "task",
    "is",
    "panoptic",
    "red",
    "big",
)
TINY_LABELS = {0: "ball", 1: "cat", 2: "sky", 3: "grass"}
TINY_THINGS = (0, 1)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))


def _save_tokenizer(folder: Path) -> None:
    """A BERT word-piece tokenizer whose special ids match BERT's ([CLS] 101, [SEP] 102, . 1012)."""
    transformers = require_transformers()
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)]
    vocab += ["[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]
    vocab += [f"[filler{i}]" for i in range(len(vocab), 1012)] + [".", ",", "?"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(str(vocab_file))
    tokenizer.save_pretrained(str(folder))


def tiny_vocab_size() -> int:
    return 1015


def _swin(out_features: list[str]):
    transformers = require_transformers()
    return transformers.SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        image_size=64,
        out_features=out_features,
    )


def save_tiny_sam(folder: str | Path, *, seed: int = 0) -> Path:
    """A SAM with a 64-pixel input, 8-pixel patches and 16 channels."""
    transformers = require_transformers()
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=8,
        output_channels=16,
        global_attn_indexes=[1],
        window_size=4,
        mlp_dim=64,
        num_pos_feats=8,
    )
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8)
    decoder = SamMaskDecoderConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_dim=32,
        iou_head_hidden_dim=16,
    )
    config = transformers.SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt.to_dict(),
        mask_decoder_config=decoder.to_dict(),
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    transformers.SamModel(config).save_pretrained(str(folder))
    _write_json(folder / "preprocessor_config.json", {"image_mean": [0.485, 0.456, 0.406]})
    return folder


def save_tiny_grounding_dino(folder: str | Path, *, seed: int = 0) -> Path:
    """A Grounding-DINO with a tiny Swin, a one-layer BERT and a 64-pixel input."""
    transformers = require_transformers()
    text = transformers.BertConfig(
        vocab_size=tiny_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config = transformers.GroundingDinoConfig(
        backbone_config=_swin(["stage2", "stage3", "stage4"]).to_dict(),
        text_config=text.to_dict(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=12,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(str(folder))
    _save_tokenizer(folder)
    _write_json(
        folder / "preprocessor_config.json", {"size": {"shortest_edge": 64, "longest_edge": 128}}
    )
    return folder


def _panoptic_preprocessor(folder: Path) -> None:
    _write_json(
        folder / "preprocessor_config.json",
        {
            "size": {"shortest_edge": 64, "longest_edge": 128},
            "size_divisor": 32,
            "metadata": {"thing_ids": list(TINY_THINGS)},
        },
    )


def save_tiny_mask2former(folder: str | Path, *, seed: int = 0) -> Path:
    """A Mask2Former with a tiny Swin, 8 queries and the classes of ``TINY_LABELS``."""
    transformers = require_transformers()
    config = transformers.Mask2FormerConfig(
        backbone_config=_swin(["stage1", "stage2", "stage3", "stage4"]).to_dict(),
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=8,
        num_attention_heads=2,
        id2label=dict(TINY_LABELS),
        label2id={v: k for k, v in TINY_LABELS.items()},
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(str(folder))
    _panoptic_preprocessor(folder)
    return folder


def save_tiny_oneformer(folder: str | Path, *, seed: int = 0) -> Path:
    """A OneFormer with a tiny Swin, 8 queries, a tiny task encoder and a BERT tokenizer."""
    transformers = require_transformers()
    config = transformers.OneFormerConfig(
        backbone_config=_swin(["stage1", "stage2", "stage3", "stage4"]).to_dict(),
        conv_dim=32,
        mask_dim=32,
        hidden_dim=32,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        encoder_layers=1,
        decoder_layers=2,
        num_queries=8,
        num_attention_heads=2,
        id2label=dict(TINY_LABELS),
        label2id={v: k for k, v in TINY_LABELS.items()},
        task_seq_len=8,
        text_encoder_width=32,
        text_encoder_context_length=8,
        text_encoder_num_layers=1,
        text_encoder_vocab_size=tiny_vocab_size(),
        text_encoder_proj_layers=1,
        text_encoder_n_ctx=4,
        is_training=False,
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    transformers.OneFormerForUniversalSegmentation(config).save_pretrained(str(folder))
    _save_tokenizer(folder)
    _panoptic_preprocessor(folder)
    return folder
