"""Hugging Face SAM 3 checkpoints -> keras_sam3 components and `SAM3Backbone`.

Every tensor of the checkpoint is either loaded into a variable or matched
by `IGNORED`, which says why it is not needed; anything else, and anything
missing or mis-shaped, raises an error that names it.
"""

import re

import keras
import numpy as np

from keras_sam3.convert.hf_checkpoint import HFCheckpoint
from keras_sam3.convert.rename import MASK_DECODER_RULES
from keras_sam3.convert.rename import TEXT_ENCODER_RULES
from keras_sam3.convert.rename import VISION_ENCODER_RULES
from keras_sam3.convert.rename import load_weights
from keras_sam3.convert.rename import weight_map

# (pattern over the file's keys, reason). Detector keys are matched without
# their `detector_model.` prefix.
IGNORED = [
    (
        r"^text_encoder\.text_projection\.weight$",
        "CLIP's own 1024->512 text projection: SAM 3 projects every token with "
        "`text_projection` (1024->256) instead",
    ),
    (
        r"^mask_decoder\.pixel_decoder\.(conv_layers|norms)\.([2-9]|\d\d+)\.",
        "pixel-decoder stage beyond the two skip levels: never called, in the "
        "reference or in Meta's code",
    ),
    (
        r"^tracker_neck\.",
        "the tracker's own FPN neck: used by the SAM 3 tracker (points / boxes / "
        "masks), not by concept segmentation",
    ),
    (
        r"^tracker_model\.",
        "the SAM 3 tracker's prompt encoder, mask decoder and video memory "
        "modules: not part of concept segmentation",
    ),
]

# (component attribute, Hugging Face prefix, rename rules).
BACKBONE_COMPONENTS = [
    ("vision_encoder", "vision_encoder.", VISION_ENCODER_RULES),
    ("text_encoder", "text_encoder.", TEXT_ENCODER_RULES),
    ("geometry_encoder", "geometry_encoder.", []),
    ("detr_encoder", "detr_encoder.", []),
    ("detr_decoder", "detr_decoder.", []),
    ("scoring", "dot_product_scoring.", []),
    ("mask_decoder", "mask_decoder.", MASK_DECODER_RULES),
]


def ignore_reason(key):
    """Why a checkpoint key is not loaded, or None if it must be."""
    for pattern, reason in IGNORED:
        if re.search(pattern, key):
            return reason
    return None


class ConversionReport:
    """What a conversion did with every tensor of the file."""

    def __init__(self):
        self.loaded = []
        self.ignored = {}  # reason -> [keys]

    def summary(self):
        lines = [f"loaded {len(self.loaded)} tensors"]
        for reason, keys in self.ignored.items():
            lines.append(f"ignored {len(keys)} tensors: {reason}")
        return "\n".join(lines)


def _account(checkpoint, loaded):
    """Every key must be loaded or ignored with a reason."""
    report = ConversionReport()
    report.loaded = sorted(loaded)
    loaded = set(loaded)
    unexpected = []
    all_keys = list(checkpoint.tensors) + list(checkpoint.other_tensors)
    for key in all_keys:
        if key in loaded:
            continue
        reason = ignore_reason(key)
        if reason is None:
            unexpected.append(key)
        else:
            report.ignored.setdefault(reason, []).append(key)
    if unexpected:
        raise ValueError(
            "Unexpected tensors in the checkpoint (neither loaded nor on the ignore "
            "list):\n  " + "\n  ".join(sorted(unexpected))
        )
    return report


def _check_pixel_decoder(checkpoint, mask_decoder):
    stages = checkpoint.num_pixel_decoder_stages()
    if stages < mask_decoder.num_upsampling_stages:
        raise ValueError(
            f"The checkpoint's pixel decoder has {stages} stages; SAM 3 applies "
            f"{mask_decoder.num_upsampling_stages}."
        )


def build_backbone(checkpoint, image_size=None, cls_without_boxes=True, dtype=None):
    """An unloaded `SAM3Backbone` with the checkpoint's architecture.

    Args:
        checkpoint: `HFCheckpoint`.
        image_size: int, optional. Input side; defaults to the config's.
        cls_without_boxes: bool. Meta's text-only behaviour (True) or the
            reference's (False); see `SAM3GeometryEncoder`.
        dtype: optional dtype policy.
    """
    from keras_sam3.models.backbone import SAM3Backbone
    from keras_sam3.models.detr_decoder import SAM3DetrDecoder
    from keras_sam3.models.detr_encoder import SAM3DetrEncoder
    from keras_sam3.models.geometry_encoder import SAM3GeometryEncoder
    from keras_sam3.models.mask_decoder import SAM3MaskDecoder
    from keras_sam3.models.scoring import SAM3DotProductScoring
    from keras_sam3.models.text_encoder import SAM3TextEncoder
    from keras_sam3.models.vision_encoder import SAM3VisionEncoder

    return SAM3Backbone(
        vision_encoder=SAM3VisionEncoder(**checkpoint.vision_encoder_kwargs(), dtype=dtype),
        text_encoder=SAM3TextEncoder(**checkpoint.text_encoder_kwargs(), dtype=dtype),
        geometry_encoder=SAM3GeometryEncoder(
            **checkpoint.geometry_encoder_kwargs(),
            cls_without_boxes=cls_without_boxes,
            dtype=dtype,
        ),
        detr_encoder=SAM3DetrEncoder(**checkpoint.detr_encoder_kwargs(), dtype=dtype),
        detr_decoder=SAM3DetrDecoder(**checkpoint.detr_decoder_kwargs(), dtype=dtype),
        scoring=SAM3DotProductScoring(**checkpoint.scoring_kwargs(), dtype=dtype),
        mask_decoder=SAM3MaskDecoder(**checkpoint.mask_decoder_kwargs(), dtype=dtype),
        image_size=image_size or checkpoint.image_size(),
        dtype=dtype,
    )


def load_backbone_weights(backbone, checkpoint, progress=None):
    """Loads every detector tensor into `backbone`; returns a `ConversionReport`.

    `progress`, if given, is called with each component's name as it loads.
    """
    _check_pixel_decoder(checkpoint, backbone.mask_decoder)
    loaded = []
    for attribute, prefix, rules in BACKBONE_COMPONENTS:
        if progress:
            progress(attribute)
        loaded += load_weights(getattr(backbone, attribute), checkpoint.tensors, rules, prefix)
    return _account(checkpoint, loaded)


def convert_backbone(directory, image_size=None, cls_without_boxes=True, dtype=None):
    """`(SAM3Backbone, ConversionReport)` from a checkpoint directory: a plain
    `Sam3Model` or the full `facebook/sam3` layout."""
    checkpoint = HFCheckpoint(directory)
    backbone = build_backbone(checkpoint, image_size, cls_without_boxes, dtype)
    report = load_backbone_weights(backbone, checkpoint)
    return backbone, report


def convert_vision_encoder(directory, dtype=None):
    """Builds a `SAM3VisionEncoder` from a checkpoint directory and loads it."""
    from keras_sam3.models.vision_encoder import SAM3VisionEncoder

    checkpoint = HFCheckpoint(directory)
    encoder = SAM3VisionEncoder(**checkpoint.vision_encoder_kwargs(), dtype=dtype)
    size = checkpoint.image_size()
    encoder.build((None, size, size, 3))
    load_weights(encoder, checkpoint.tensors, VISION_ENCODER_RULES, "vision_encoder.")
    return encoder


def convert_text_encoder(directory, dtype=None):
    """Builds a `SAM3TextEncoder` from a checkpoint directory and loads it."""
    from keras_sam3.models.text_encoder import SAM3TextEncoder

    checkpoint = HFCheckpoint(directory)
    kwargs = checkpoint.text_encoder_kwargs()
    encoder = SAM3TextEncoder(**kwargs, dtype=dtype)
    encoder.build((None, kwargs["max_sequence_length"]))
    load_weights(encoder, checkpoint.tensors, TEXT_ENCODER_RULES, "text_encoder.")
    return encoder


# File keys -> `Sam3TrackerModel` names, applied in order, as transformers'
# own loading renames them (its conversion mapping "sam3_tracker"). Layouts:
# facebook/sam3 (`detector_model.*`, `tracker_model.*`, `tracker_neck.*`;
# the detector's ViT is the tracker's), transformers 5.23's
# `Sam3VideoModel.save_pretrained` (`tracker_model.tracker_model.*`) and
# `Sam3TrackerModel.save_pretrained` (`tracker_model.detector_model.vision_encoder.backbone.*`,
# `tracker_model.tracker_neck.*`, `tracker_model.*`).
TRACKER_RENAMES = [
    (r"^tracker_model\.tracker_model\.", "tracker_model."),
    (r"^(tracker_model\.)?detector_model\.vision_encoder\.backbone\.", "vision_encoder.backbone."),
    (r"^(tracker_model\.)?tracker_neck\.", "vision_encoder.neck."),
    (r"^tracker_model\.", ""),
]
TRACKER_FILE_PREFIXES = ("tracker_model.", "tracker_neck.", "detector_model.")


def tracker_tensors(checkpoint):
    """The tracker's tensors under `Sam3TrackerModel` names, from a full
    facebook/sam3 checkpoint, a `Sam3TrackerModel.save_pretrained`
    directory or one already named as the tracker's modules.

    In the prefixed layouts a key under none of `TRACKER_FILE_PREFIXES`
    raises; the concept detector's own keys (`detector_model.*` but its ViT)
    are not the tracker's and are left out.
    """
    raw = checkpoint.file_tensors
    if not any(k.startswith(TRACKER_FILE_PREFIXES) for k in raw):
        return dict(raw)  # names are already the tracker's
    unknown = sorted(k for k in raw if not k.startswith(TRACKER_FILE_PREFIXES))
    if unknown:
        raise ValueError(
            "Unexpected tensors in the checkpoint (none of "
            f"{', '.join(TRACKER_FILE_PREFIXES)}):\n  " + "\n  ".join(unknown)
        )
    tensors = {}
    for key, value in raw.items():
        if key.startswith("detector_model.") and not key.startswith("detector_model.vision_encoder.backbone."):
            continue  # the concept detector's
        name = key
        for pattern, replacement in TRACKER_RENAMES:
            name = re.sub(pattern, replacement, name)
        if name in tensors:
            raise ValueError(f"Two checkpoint tensors are the tracker's {name}; {key} is one.")
        tensors[name] = value
    return tensors


TRACKER_IGNORED = [
    (r"^(memory_|mask_downsample|object_pointer_proj|temporal_positional_encoding_projection_layer)",
     "video memory modules: not used on single images"),
    (r"^(no_memory_positional_encoding|no_object_pointer|occlusion_spatial_embedding_parameter)$",
     "video memory state: not used on single images"),
]


# The shared ViT's variable paths -> checkpoint keys (VISION_ENCODER_RULES
# without the vision encoder's `backbone/`).
SHARED_VIT_RULES = [
    (r"^patch_embeddings/kernel$", "embeddings/patch_embeddings/projection/kernel"),
    (r"^position_embeddings$", "embeddings/position_embeddings"),
]


def _check_shared_vit(vit, tensors):
    """Raises unless `vit` holds the checkpoint's ViT. Compares the patch
    embedding and every vector (norms, biases): a few MB even for SAM 3's
    ViT, and any other checkpoint differs there."""
    differ = []
    for key, variable, transform in weight_map(vit, SHARED_VIT_RULES, "vision_encoder.backbone."):
        if len(variable.shape) > 1 and not key.endswith("patch_embeddings.projection.weight"):
            continue
        if key not in tensors:
            differ.append(f"{key} (missing from the checkpoint)")
            continue
        dtype = keras.backend.standardize_dtype(variable.dtype)
        expected = transform(np.asarray(tensors[key])).astype(dtype).astype("float32")
        actual = keras.ops.convert_to_numpy(variable).astype("float32")
        if expected.shape != actual.shape or not np.array_equal(expected, actual):
            differ.append(key)
    if differ:
        raise ValueError(
            "The shared ViT (concept_segmenter's) does not hold this checkpoint's ViT; it "
            "differs at:\n  " + "\n  ".join(differ) + "\nLoad the concept segmenter from "
            "the same checkpoint, or leave concept_segmenter out."
        )


def build_tracker(config, add_no_memory_embedding=True, dtype=None, vit=None):
    """An unloaded `SAM3Tracker` from a `Sam3TrackerConfig` dict (sharing `vit`
    if given)."""
    from keras_sam3.convert.hf_checkpoint import HFCheckpoint
    from keras_sam3.models.tracker import SAM3Tracker
    from keras_sam3.models.tracker_mask_decoder import SAM3TrackerMaskDecoder
    from keras_sam3.models.tracker_prompt_encoder import SAM3TrackerPromptEncoder
    from keras_sam3.models.vision_encoder import SAM3VisionEncoder

    vision = HFCheckpoint.from_state({"vision_config": config.get("vision_config") or {}}, {})
    prompt = config.get("prompt_encoder_config") or {}
    mask = config.get("mask_decoder_config") or {}
    tracker = SAM3Tracker(
        vision_encoder=SAM3VisionEncoder(**vision.vision_encoder_kwargs(), vit=vit, dtype=dtype),
        prompt_encoder=SAM3TrackerPromptEncoder(
            hidden_dim=prompt.get("hidden_size", 256),
            image_size=prompt.get("image_size", 1008),
            patch_size=prompt.get("patch_size", 14),
            mask_input_channels=prompt.get("mask_input_channels", 16),
            num_point_embeddings=prompt.get("num_point_embeddings", 4),
            layer_norm_epsilon=prompt.get("layer_norm_eps", 1e-6),
            dtype=dtype,
        ),
        mask_decoder=SAM3TrackerMaskDecoder(
            hidden_dim=mask.get("hidden_size", 256),
            num_layers=mask.get("num_hidden_layers", 2),
            num_heads=mask.get("num_attention_heads", 8),
            mlp_dim=mask.get("mlp_dim", 2048),
            downsample_rate=mask.get("attention_downsample_rate", 2),
            num_multimask_outputs=mask.get("num_multimask_outputs", 3),
            iou_head_depth=mask.get("iou_head_depth", 3),
            iou_head_hidden_dim=mask.get("iou_head_hidden_dim", 256),
            dynamic_multimask_via_stability=mask.get("dynamic_multimask_via_stability", True),
            stability_delta=mask.get("dynamic_multimask_stability_delta", 0.05),
            stability_threshold=mask.get("dynamic_multimask_stability_thresh", 0.98),
            dtype=dtype,
        ),
        add_no_memory_embedding=add_no_memory_embedding,
        dtype=dtype,
    )
    tracker.build()
    return tracker


def convert_tracker(directory, add_no_memory_embedding=True, dtype=None, vit=None):
    """`(SAM3Tracker, loaded keys)` from a facebook/sam3-layout checkpoint or a
    `Sam3TrackerModel` directory. Every tracker tensor is loaded or ignored
    with a reason; anything else raises.

    `vit`: an already loaded `SAM3ViT` from the same checkpoint (the concept
    model's) to share instead of loading a second copy of the trunk.
    """
    from keras_sam3.convert.rename import TRACKER_PROMPT_ENCODER_RULES

    checkpoint = HFCheckpoint(directory)
    config = checkpoint.full_config.get("tracker_config") or checkpoint.full_config
    tracker = build_tracker(config, add_no_memory_embedding, dtype, vit=vit)
    tensors = tracker_tensors(checkpoint)
    loaded = []
    if vit is None:
        loaded += load_weights(tracker.vision_encoder, tensors, VISION_ENCODER_RULES, "vision_encoder.")
    else:  # the shared trunk is loaded already: only the tracker's neck
        _check_shared_vit(vit, tensors)
        loaded += load_weights(tracker.vision_encoder.neck, tensors, [], "vision_encoder.neck.")
        loaded += [k for k in tensors if k.startswith("vision_encoder.backbone.")]
    loaded += load_weights(tracker.prompt_encoder, tensors, TRACKER_PROMPT_ENCODER_RULES, "prompt_encoder.")
    loaded += load_weights(tracker.mask_decoder, tensors, [], "mask_decoder.")
    for name, variable in (
        ("no_memory_embedding", tracker.no_memory_embedding),
        ("shared_image_embedding.positional_embedding", tracker.image_positional_embedding),
    ):
        if name not in tensors:
            raise ValueError(f"Cannot load the tracker: missing tensor {name}")
        value = np.asarray(tensors[name])
        if tuple(value.shape) != tuple(variable.shape):
            key = next(k for k, v in checkpoint.file_tensors.items() if v is tensors[name])
            raise ValueError(
                f"Cannot load the tracker: mis-shaped tensor {key}: checkpoint "
                f"{tuple(value.shape)}, {variable.path} expects {tuple(variable.shape)}"
            )
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
        loaded.append(name)
    unexpected = [
        k for k in tensors
        if k not in set(loaded) and not any(re.search(p, k) for p, _ in TRACKER_IGNORED)
    ]
    if unexpected:
        raise ValueError("Unexpected tracker tensors:\n  " + "\n  ".join(sorted(unexpected)))
    return tracker, loaded
