"""A tiny `SAM3Backbone` built from components, for unit tests."""

import numpy as np

from keras_sam3 import SAM3Backbone
from keras_sam3 import SAM3DetrDecoder
from keras_sam3 import SAM3DetrEncoder
from keras_sam3 import SAM3DotProductScoring
from keras_sam3 import SAM3GeometryEncoder
from keras_sam3 import SAM3MaskDecoder
from keras_sam3 import SAM3TextEncoder
from keras_sam3 import SAM3VisionEncoder

IMAGE_SIZE = 112


def unbuilt_layers(model):
    """Names of the layers of `model` (itself included) not built yet."""
    return [layer.name for layer in model._flatten_layers() if not layer.built]


# The vision encoder of the tiny configuration (windowed and global layers).
TINY_VISION = dict(
    hidden_dim=32,
    intermediate_dim=64,
    num_layers=2,
    num_heads=2,
    pretrain_image_size=56,
    window_size=4,
    global_attn_indexes=(1,),
    fpn_hidden_dim=16,
)


def tiny_backbone(dtype=None, cls_without_boxes=True, vocabulary_size=100):
    d = TINY_VISION["fpn_hidden_dim"]  # the FPN width is every later component's
    small = dict(hidden_dim=d, num_heads=2, intermediate_dim=32)
    return SAM3Backbone(
        vision_encoder=SAM3VisionEncoder(**TINY_VISION, dtype=dtype),
        text_encoder=SAM3TextEncoder(
            vocabulary_size=vocabulary_size,
            hidden_dim=32,
            intermediate_dim=64,
            num_layers=1,
            num_heads=2,
            output_dim=d,
            dtype=dtype,
        ),
        geometry_encoder=SAM3GeometryEncoder(
            num_layers=1, cls_without_boxes=cls_without_boxes, dtype=dtype, **small
        ),
        detr_encoder=SAM3DetrEncoder(num_layers=1, dtype=dtype, **small),
        detr_decoder=SAM3DetrDecoder(num_layers=2, num_queries=5, dtype=dtype, **small),
        scoring=SAM3DotProductScoring(hidden_dim=d, intermediate_dim=32, dtype=dtype),
        mask_decoder=SAM3MaskDecoder(hidden_dim=d, num_heads=2, dtype=dtype),
        image_size=IMAGE_SIZE,
        dtype=dtype,
    )


def tiny_inputs(batch=2, num_boxes=2, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (batch, num_boxes)).astype("int32")
    if num_boxes:
        labels[-1, -1] = -10
    return {
        "images": rng.uniform(-1, 1, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32"),
        "token_ids": rng.integers(0, 100, (batch, 32)).astype("int32"),
        "padding_mask": (np.arange(32) < 7).astype("int32")[None].repeat(batch, 0),
        "boxes": rng.uniform(0.2, 0.6, (batch, num_boxes, 4)).astype("float32"),
        "box_labels": labels,
    }


def toy_tokenizer():
    """A byte-level CLIP-style tokenizer without merges (514 ids)."""
    from keras_sam3.models.tokenizer import SAM3Tokenizer
    from keras_sam3.models.tokenizer import bytes_to_unicode

    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["<|startoftext|>", "<|endoftext|>"]
    return SAM3Tokenizer({t: i for i, t in enumerate(tokens)}, [])


def tiny_segmenter(**kwargs):
    from keras_sam3.models.image_converter import SAM3ImageConverter
    from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
    from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter

    backbone = tiny_backbone(vocabulary_size=514, **kwargs)
    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(
        toy_tokenizer(), SAM3ImageConverter(IMAGE_SIZE)
    )
    return SAM3PromptableConceptImageSegmenter(backbone=backbone, preprocessor=preprocessor)
