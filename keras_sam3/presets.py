"""Registered presets and loading from every source.

Preset definitions are the JSON files of the repository's `presets/` folder:
a name, a `source` (an `hf://` or `kaggle://` handle, a Keras preset or a
Hugging Face checkpoint) and the model's parameter count.
"""

import glob
import json
import os
import warnings

PRESETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets")
TOKENIZER_ASSETS = "assets/tokenizer"


def list_presets():
    """`{name: definition}` of the registered presets."""
    presets = {}
    for path in sorted(glob.glob(os.path.join(PRESETS_DIR, "*.json"))):
        with open(path) as f:
            definition = json.load(f)
        presets[definition["name"]] = definition
    return presets


def resolve_preset_name(preset):
    """A registered name's source; anything else unchanged.

    A source that is a relative path names a preset shipped in `presets/`
    (the embedded models). A registered name wins over a local directory of
    the same name, with a warning; `./name` is the directory.
    """
    presets = list_presets()
    if preset not in presets:
        return preset
    if os.path.isdir(preset):
        warnings.warn(
            f"{preset!r} is a registered preset and also a directory here; loading the "
            f"registered one (as keras-hub does). Pass {os.path.join('.', preset)!r} for the directory.",
            stacklevel=3,
        )
    source = presets[preset]["source"]
    if "://" not in source and not os.path.isabs(source):
        source = os.path.join(PRESETS_DIR, source)
    return source


def is_keras_preset(preset):
    """Whether `preset` (a directory or an hf:// / kaggle:// handle) is a Keras preset."""
    from keras_hub.src.utils.preset_utils import check_file_exists

    return check_file_exists(preset, "metadata.json")


def _resolve_source(preset):
    """A registered name's source, checked to be something `from_preset` reads."""
    preset = resolve_preset_name(preset)
    if not preset.startswith(("hf://", "kaggle://")) and not os.path.isdir(preset):
        raise ValueError(
            f"Unknown preset {preset!r}: not one of {sorted(list_presets())}, a directory, "
            "or an hf:// / kaggle:// handle."
        )
    return preset


def _check_image_size(preset, built_size, image_size):
    if image_size is not None and image_size != built_size:
        raise ValueError(
            f"The Keras preset {preset!r} is built for {built_size} px; convert "
            "the Hugging Face checkpoint to use another size."
        )


def _keras_preset_tokenizer(preset, sequence_length):
    """The tokenizer a Keras preset ships in its assets, or None (backbone only)."""
    from keras_hub.src.utils.preset_utils import check_file_exists
    from keras_hub.src.utils.preset_utils import get_file

    from keras_sam3.models.tokenizer import SAM3Tokenizer

    if not check_file_exists(preset, f"{TOKENIZER_ASSETS}/vocab.json"):
        return None
    return SAM3Tokenizer(
        get_file(preset, f"{TOKENIZER_ASSETS}/vocab.json"),
        get_file(preset, f"{TOKENIZER_ASSETS}/merges.txt"),
        sequence_length=sequence_length,
    )


def load_backbone_and_tokenizer(preset, image_size=None, cls_without_boxes=True, dtype=None):
    """`(SAM3Backbone, SAM3Tokenizer or None)` from any supported source."""
    from keras_sam3.convert.hf_to_keras import convert_backbone
    from keras_sam3.convert.sources import resolve_checkpoint
    from keras_sam3.models.backbone import SAM3Backbone
    from keras_sam3.models.tokenizer import SAM3Tokenizer

    preset = _resolve_source(preset)
    if is_keras_preset(preset):
        backbone = SAM3Backbone.from_preset(preset, **({} if dtype is None else {"dtype": dtype}))
        _check_image_size(preset, backbone.image_size, image_size)
        return backbone, _keras_preset_tokenizer(preset, backbone.text_encoder.max_sequence_length)
    directory = resolve_checkpoint(preset)
    backbone, _ = convert_backbone(directory, image_size, cls_without_boxes, dtype)
    tokenizer = SAM3Tokenizer.find_in_directory(directory, backbone.text_encoder.max_sequence_length)
    return backbone, tokenizer


def load_tokenizer_and_image_size(preset, image_size=None, require_tokenizer=False):
    """`(SAM3Tokenizer or None, image side)` of any supported source, read
    from its configuration and tokenizer files without its weights (an
    `hf://` checkpoint downloads its JSON files and `merges.txt` only).

    Raises:
        ValueError: with `require_tokenizer`, the source ships no tokenizer
            (a backbone-only Keras preset, a weights-only checkpoint).
    """
    from keras_hub.src.utils.preset_utils import get_file

    from keras_sam3.convert.hf_checkpoint import HFCheckpoint
    from keras_sam3.convert.sources import resolve_checkpoint
    from keras_sam3.models.tokenizer import SAM3Tokenizer

    preset = _resolve_source(preset)
    if is_keras_preset(preset):
        with open(get_file(preset, "config.json")) as f:
            config = json.load(f)["config"]
        built_size = config["image_size"]
        _check_image_size(preset, built_size, image_size)
        sequence_length = config["text_encoder"]["config"]["max_sequence_length"]
        tokenizer = _keras_preset_tokenizer(preset, sequence_length)
    else:
        directory = resolve_checkpoint(preset, weights=False)
        checkpoint = HFCheckpoint(directory, weights=False)
        sequence_length = checkpoint.text_encoder_kwargs()["max_sequence_length"]
        tokenizer = SAM3Tokenizer.find_in_directory(directory, sequence_length)
        built_size = image_size or checkpoint.image_size()
    if tokenizer is None and require_tokenizer:
        raise ValueError(f"{preset!r} ships no tokenizer files (vocab.json + merges.txt, or tokenizer.json).")
    return tokenizer, built_size
