"""deva.segmenters: the ImageSegmenter protocol and its adapters.

Model-backed adapters (SAM, Grounding-DINO + SAM, OWLv2 + SAM, SAM 3, Mask2Former, OneFormer)
need the optional ``transformers`` dependency (``pip install 'deva[models]'``); it is imported
only when one is built, so importing this package never loads it nor downloads anything.
"""

from deva.segmenters.grounded_sam import GroundedSamSegmenter, parse_prompt
from deva.segmenters.hf import ModelNotAvailableError
from deva.segmenters.owlv2_sam import Owlv2SamSegmenter
from deva.segmenters.panoptic import Mask2FormerSegmenter, OneFormerSegmenter
from deva.segmenters.precomputed import BurstSegmenter, PrecomputedSegmenter, VipsegSegmenter
from deva.segmenters.registry import SEGMENTERS, check_segmenter_name
from deva.segmenters.sam import SamAutomaticSegmenter, SamPromptDecoder
from deva.segmenters.sam3 import Sam3Segmenter
from deva.types import ImageSegmenter

__all__ = [
    "SEGMENTERS",
    "BurstSegmenter",
    "GroundedSamSegmenter",
    "ImageSegmenter",
    "Mask2FormerSegmenter",
    "ModelNotAvailableError",
    "OneFormerSegmenter",
    "Owlv2SamSegmenter",
    "PrecomputedSegmenter",
    "Sam3Segmenter",
    "SamAutomaticSegmenter",
    "SamPromptDecoder",
    "VipsegSegmenter",
    "check_segmenter_name",
    "parse_prompt",
]
