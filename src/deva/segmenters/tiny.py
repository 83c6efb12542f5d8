"""Tiny randomly initialised image models in the ``save_pretrained`` layout, for tests and demos.

Each ``save_tiny_*`` function writes a folder that the matching ``from_pretrained`` loads
without any download: ``config.json`` + weights (+ ``preprocessor_config.json`` with a small
input size, + a word-level BERT or a byte-pair CLIP tokenizer where the model reads text).
Their outputs are random; they exist to exercise the real loading and inference code quickly
on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deva.segmenters.hf import IMAGENET_MEAN, IMAGENET_STD, require_transformers

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


def _save_clip_tokenizer(folder: Path, *, clip_ids: bool = False) -> int:
    """A byte-pair CLIP tokenizer over the letters and ``TINY_WORDS``; returns its vocab size.

    Every word is built from its letters by left-to-right merges (the last letter carries
    CLIP's end-of-word marker ``</w>``); other text falls back to single letters or unknown.
    ``clip_ids`` lays the ids out as CLIP's own vocabulary does, which OWLv2 relies on: ``!``
    (the pad token) is id 0, the start and end tokens are the two highest ids (OWLv2 treats a
    query starting with id 0 as padding and reads the text at its highest id). Otherwise the
    start and end tokens are ids 0 and 1 (SAM 3's tiny text config).
    """
    transformers = require_transformers()
    letters = "abcdefghijklmnopqrstuvwxyz"
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = [*letters, *(f"{c}</w>" for c in letters)]
    merges: list[str] = []
    for word in TINY_WORDS:
        pieces = [*word[:-1], f"{word[-1]}</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            rule = f"{merged} {piece}"
            merged += piece
            if rule not in merges:
                merges.append(rule)
            if merged not in vocab:
                vocab.append(merged)
    vocab = ["!", *vocab, *specials] if clip_ids else [*specials, *vocab]
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "vocab.json", {token: i for i, token in enumerate(vocab)})
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        unk_token="<|endoftext|>",
        **({"pad_token": "!"} if clip_ids else {}),
    )
    tokenizer.save_pretrained(str(folder))
    return len(vocab)


def _tiny_sam3_vision(fpn_width: int) -> object:
    """SAM 3's ViT at 112 pixels (14-pixel patches, two layers of width 32) with an FPN."""
    require_transformers()
    from transformers.models.sam3 import configuration_sam3 as c

    vit = c.Sam3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=112,
        patch_size=14,
        window_size=4,
        global_attn_indexes=[1],
        pretrain_image_size=56,
    )
    return c.Sam3VisionConfig(
        backbone_config=vit.to_dict(),
        fpn_hidden_size=fpn_width,
        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
    )


def save_tiny_sam3(folder: str | Path, *, seed: int = 0) -> Path:
    """A SAM 3 with a 112-pixel input (14-pixel patches, two ViT layers of width 32), a
    one-layer CLIP text encoder, one-layer DETR encoder / decoder with 8 queries and a BPE
    tokenizer."""
    transformers = require_transformers()
    from transformers.models.sam3 import configuration_sam3 as c

    folder = Path(folder)
    vocab_size = _save_clip_tokenizer(folder)
    vision = _tiny_sam3_vision(fpn_width=32)
    text = transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    small = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
    config = transformers.Sam3Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        geometry_encoder_config=c.Sam3GeometryEncoderConfig(num_layers=1, **small).to_dict(),
        detr_encoder_config=c.Sam3DETREncoderConfig(num_layers=1, **small).to_dict(),
        detr_decoder_config=c.Sam3DETRDecoderConfig(num_layers=1, num_queries=8, **small).to_dict(),
        mask_decoder_config=c.Sam3MaskDecoderConfig(
            hidden_size=32, num_attention_heads=2
        ).to_dict(),
    )
    torch.manual_seed(seed)
    transformers.Sam3Model(config).save_pretrained(str(folder))
    _write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "Sam3ImageProcessor",
            "size": {"height": 112, "width": 112},
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
    )
    return folder


def save_tiny_owlv2(folder: str | Path, *, seed: int = 0) -> Path:
    """An OWLv2 with a 64-pixel input (16-pixel patches: 16 boxes), one-layer text and vision
    transformers of width 32 and a BPE tokenizer with CLIP's id layout."""
    transformers = require_transformers()
    folder = Path(folder)
    vocab_size = _save_clip_tokenizer(folder, clip_ids=True)
    small = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    text = transformers.Owlv2TextConfig(
        vocab_size=vocab_size,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        **small,
    )
    vision = transformers.Owlv2VisionConfig(image_size=64, patch_size=16, **small)
    config = transformers.Owlv2Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32
    )
    torch.manual_seed(seed)
    transformers.Owlv2ForObjectDetection(config).save_pretrained(str(folder))
    _write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "Owlv2ImageProcessor",
            "size": {"height": 64, "width": 64},
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        },
    )
    return folder


# --------------------------------------------------------------------------------------------
# Promptable video models (propagation backends, deva.inference.sam_video)

#: input size of the tiny video models; their memory tokens are 8×8 (stride 16)
TINY_VIDEO_SIZE = 128
# The memory encoder's output width is fixed at 64 and the tracker's hidden width must exceed it.
_VIDEO_HIDDEN = 128


def _video_memory_settings() -> dict:
    """Memory attention, encoder and fuser keys shared by the tiny video configs."""
    d = _VIDEO_HIDDEN
    return {
        "image_size": TINY_VIDEO_SIZE,
        "memory_attention_hidden_size": d,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 64,
        "memory_attention_mlp_hidden_size": 64,
        "memory_attention_rope_feat_sizes": [8, 8],
        "memory_encoder_hidden_size": d,
        "memory_encoder_output_channels": 64,
        "mask_downsampler_embed_dim": d,
        "memory_fuser_embed_dim": d,
        "memory_fuser_intermediate_dim": 64,
        "memory_fuser_num_layers": 1,
    }


def _video_heads(prefix: str) -> dict:
    """Prompt encoder and mask decoder configs (``prefix``: the transformers model family)."""
    transformers = require_transformers()
    d = _VIDEO_HIDDEN
    prompt = getattr(transformers, f"{prefix}PromptEncoderConfig")
    decoder = getattr(transformers, f"{prefix}MaskDecoderConfig")
    return {
        "prompt_encoder_config": prompt(
            hidden_size=d, image_size=TINY_VIDEO_SIZE, patch_size=16, mask_input_channels=4
        ).to_dict(),
        "mask_decoder_config": decoder(
            hidden_size=d, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ).to_dict(),
    }


def _tiny_hiera_vision() -> dict:
    """A four-stage Hiera trunk (16 → 128 channels) with an FPN of width 128, 128-pixel input."""
    transformers = require_transformers()
    hiera = transformers.Sam2HieraDetConfig(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[TINY_VIDEO_SIZE, TINY_VIDEO_SIZE],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[3],  # never a stage's first block
        window_positional_embedding_background_size=[4, 4],
    )
    return transformers.Sam2VisionConfig(
        backbone_config=hiera.to_dict(),
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        fpn_hidden_size=_VIDEO_HIDDEN,
    ).to_dict()


def _save_video_model(
    folder: str | Path, model_class: str, config: object, normalisation: float | None, seed: int
) -> Path:
    """Save a random ``model_class(config)`` with its input normalisation (ImageNet's when
    ``normalisation`` is None, else that value as every mean and std)."""
    transformers = require_transformers()
    folder = Path(folder)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():  # objects always present, so that masks are decoded, not blanked
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(5.0)
    model.save_pretrained(str(folder))
    _write_json(
        folder / "preprocessor_config.json",
        {
            "image_mean": [normalisation] * 3 if normalisation else list(IMAGENET_MEAN),
            "image_std": [normalisation] * 3 if normalisation else list(IMAGENET_STD),
        },
    )
    return folder


def save_tiny_sam2_video(folder: str | Path, *, seed: int = 0) -> Path:
    """A SAM 2 video model (``Sam2VideoModel``) with a tiny Hiera trunk at 128 pixels."""
    transformers = require_transformers()
    config = transformers.Sam2VideoConfig(
        vision_config=_tiny_hiera_vision(),
        **_video_heads("Sam2Video"),
        **_video_memory_settings(),
    )
    return _save_video_model(folder, "Sam2VideoModel", config, None, seed)


def save_tiny_edgetam_video(folder: str | Path, *, seed: int = 0) -> Path:
    """An EdgeTAM video model (``EdgeTamVideoModel``: SAM 2 with a perceiver that compresses
    each memory frame) at 128 pixels. The published EdgeTAM's trunk is a timm RepViT; this
    one uses the tiny Hiera trunk, which builds without timm."""
    transformers = require_transformers()
    config = transformers.EdgeTamVideoConfig(
        vision_config=_tiny_hiera_vision(),
        **_video_heads("EdgeTamVideo"),
        **_video_memory_settings(),
        perceiver_resampler_num_latents=16,
        perceiver_resampler_num_latents_2d=16,
        perceiver_resampler_mlp_intermediate_size=64,
        perceiver_resampler_num_layers=1,
        memory_attention_rope_k_sizes=[4, 4],
    )
    return _save_video_model(folder, "EdgeTamVideoModel", config, None, seed)


def save_tiny_sam3_tracker_video(folder: str | Path, *, seed: int = 0) -> Path:
    """SAM 3's tracker (``Sam3TrackerVideoModel``: SAM 2's memory design on SAM 3's ViT) at
    112 pixels (14-pixel patches), normalised with mean = std = 0.5 like SAM 3."""
    transformers = require_transformers()

    vision = _tiny_sam3_vision(fpn_width=_VIDEO_HIDDEN)
    settings = _video_memory_settings()
    settings["image_size"] = 112
    heads = _video_heads("Sam3TrackerVideo")
    heads["prompt_encoder_config"]["image_size"] = 112
    heads["prompt_encoder_config"]["patch_size"] = 14
    config = transformers.Sam3TrackerVideoConfig(
        vision_config=vision.to_dict(), **heads, **settings
    )
    return _save_video_model(folder, "Sam3TrackerVideoModel", config, 0.5, seed)
