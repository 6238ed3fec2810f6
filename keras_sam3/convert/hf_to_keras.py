"""Hugging Face SAM 3 checkpoint -> keras_sam3 components.

Sublayer names mirror the reference module names, so a Keras variable path
becomes a checkpoint key through an ordered rename table, and the tensor
through one of three layout transforms (dense, conv, transposed conv).
Numpy only: no torch is needed to convert.
"""

import json
import os
import re

import keras
import numpy as np

from keras_sam3.convert.safetensors_io import read_checkpoint_tensors

DETECTOR_PREFIX = "detector_model."

# Applied after each component's own table: Keras naming -> PyTorch naming.
_GENERIC_RULES = [
    (r"_(\d+)(?=/|$)", r".\1"),  # layers_3 -> layers.3
    (r"/(kernel|gamma|embeddings)$", r".weight"),
    (r"/beta$", r".bias"),
    (r"/", r"."),
]

VISION_ENCODER_RULES = [
    (r"^backbone/patch_embeddings/kernel$", "backbone/embeddings/patch_embeddings/projection/kernel"),
    (r"^backbone/position_embeddings$", "backbone/embeddings/position_embeddings"),
]

TEXT_ENCODER_RULES = [
    (r"^text_projection/", "<root>/text_projection/"),  # Sam3Model.text_projection
    (r"^(token|position)_embedding/", r"text_model/embeddings/\1_embedding/"),
    (r"^layers_", "text_model/encoder/layers_"),
    (r"^final_layer_norm/", "text_model/final_layer_norm/"),
]


def _transform_for(layer, variable_name):
    """PyTorch tensor -> Keras variable layout for a variable and its owner."""
    if variable_name != "kernel":
        return lambda t: t
    if isinstance(layer, keras.layers.Dense):
        return lambda t: t.T  # (out, in) -> (in, out)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        # Conv (out, in, kh, kw) / ConvTranspose (in, out, kh, kw) -> (kh, kw, in|out, out|in)
        return lambda t: np.transpose(t, (2, 3, 1, 0))
    return lambda t: t


def checkpoint_key(path, rules, prefix):
    """Maps a component-relative Keras variable path to a checkpoint key."""
    for pattern, replacement in list(rules) + _GENERIC_RULES:
        path = re.sub(pattern, replacement, path)
    if path.startswith("<root>."):
        return path[len("<root>.") :]
    return prefix + path


def weight_map(component, rules, prefix):
    """`[(checkpoint_key, variable, transform)]` for every variable of `component`."""
    owners = {layer.path: layer for layer in component._flatten_layers()}
    root = component.path + "/"
    entries = []
    for variable in component.weights:
        relative = variable.path[len(root) :]
        owner_path, name = variable.path.rsplit("/", 1)
        owner = owners.get(owner_path, component)
        entries.append(
            (checkpoint_key(relative, rules, prefix), variable, _transform_for(owner, name))
        )
    return entries


def load_weights(component, tensors, rules, prefix):
    """Assigns checkpoint `tensors` to `component`; returns the keys used.

    Raises a `ValueError` naming every missing or mis-shaped tensor.
    """
    missing, mismatched, assignments = [], [], []
    for key, variable, transform in weight_map(component, rules, prefix):
        if key not in tensors:
            missing.append(f"{key} (for {variable.path})")
            continue
        value = transform(np.asarray(tensors[key]))
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(
                f"{key}: checkpoint {tuple(tensors[key].shape)} -> {tuple(value.shape)}, "
                f"{variable.path} expects {tuple(variable.shape)}"
            )
            continue
        assignments.append((variable, value, key))
    if missing or mismatched:
        lines = [f"missing tensor {m}" for m in missing] + [
            f"mis-shaped tensor {m}" for m in mismatched
        ]
        raise ValueError(
            f"Cannot load {component.name} from the checkpoint:\n  " + "\n  ".join(lines)
        )
    for variable, value, _ in assignments:
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return [key for _, _, key in assignments]


class HFCheckpoint:
    """A Hugging Face SAM 3 checkpoint directory (config.json + safetensors).

    Accepts a plain `Sam3Model` directory and the full `facebook/sam3`
    layout, whose detector keys carry a `detector_model.` prefix and whose
    config nests the detector under `detector_config`. `tensors` holds the
    detector keys without that prefix; `other_tensors` holds the rest
    (`tracker_model.*`, `tracker_neck.*`).
    """

    def __init__(self, directory):
        self.directory = directory
        config_path = os.path.join(directory, "config.json")
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"No config.json in {directory!r}.")
        with open(config_path) as f:
            config = json.load(f)
        self.full_config = config
        self.config = config.get("detector_config") or config
        raw = read_checkpoint_tensors(directory)
        prefixed = any(k.startswith(DETECTOR_PREFIX) for k in raw)
        self.tensors, self.other_tensors = {}, {}
        for key, value in raw.items():
            if prefixed and key.startswith(DETECTOR_PREFIX):
                self.tensors[key[len(DETECTOR_PREFIX) :]] = value
            elif prefixed:
                self.other_tensors[key] = value
            else:
                self.tensors[key] = value

    def vision_encoder_kwargs(self):
        vision = self.config.get("vision_config") or {}
        vit = vision.get("backbone_config") or {}
        if vit.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"Unsupported ViT hidden_act {vit['hidden_act']!r}.")
        rope = vit.get("rope_parameters") or {}
        kwargs = {
            "hidden_dim": vit.get("hidden_size", 1024),
            "intermediate_dim": vit.get("intermediate_size", 4736),
            "num_layers": vit.get("num_hidden_layers", 32),
            "num_heads": vit.get("num_attention_heads", 16),
            "patch_size": vit.get("patch_size", 14),
            "pretrain_image_size": vit.get("pretrain_image_size", 336),
            "window_size": vit.get("window_size", 24),
            "global_attn_indexes": tuple(vit.get("global_attn_indexes") or (7, 15, 23, 31)),
            "layer_norm_epsilon": vit.get("layer_norm_eps", 1e-6),
            "rope_theta": rope.get("rope_theta", vit.get("rope_theta", 10000.0)),
            "fpn_hidden_dim": vision.get("fpn_hidden_size", 256),
            "scale_factors": tuple(vision.get("scale_factors") or (4.0, 2.0, 1.0, 0.5)),
        }
        for name in ("patch_size", "pretrain_image_size"):
            if isinstance(kwargs[name], (list, tuple)):
                if kwargs[name][0] != kwargs[name][1]:
                    raise ValueError(f"Non-square {name} {kwargs[name]} is not supported.")
                kwargs[name] = kwargs[name][0]
        return kwargs

    def image_size(self):
        vit = (self.config.get("vision_config") or {}).get("backbone_config") or {}
        size = vit.get("image_size", 1008)
        return size[0] if isinstance(size, (list, tuple)) else size

    def text_encoder_kwargs(self):
        text = self.config.get("text_config") or {}
        detr = self.config.get("detr_encoder_config") or {}
        return {
            "vocabulary_size": text.get("vocab_size", 49408),
            "hidden_dim": text.get("hidden_size", 1024),
            "intermediate_dim": text.get("intermediate_size", 4096),
            "num_layers": text.get("num_hidden_layers", 24),
            "num_heads": text.get("num_attention_heads", 16),
            "max_sequence_length": text.get("max_position_embeddings", 32),
            "output_dim": detr.get("hidden_size", 256),
            "layer_norm_epsilon": text.get("layer_norm_eps", 1e-5),
            "activation": text.get("hidden_act", "gelu"),
        }

    def load_vision_encoder(self, encoder):
        """Loads `vision_encoder.*` into a built `SAM3VisionEncoder`."""
        return load_weights(encoder, self.tensors, VISION_ENCODER_RULES, "vision_encoder.")

    def load_text_encoder(self, encoder):
        """Loads `text_encoder.text_model.*` and `text_projection.*` into a
        built `SAM3TextEncoder`."""
        return load_weights(encoder, self.tensors, TEXT_ENCODER_RULES, "text_encoder.")


def convert_vision_encoder(directory, dtype=None):
    """Builds a `SAM3VisionEncoder` from a checkpoint directory and loads it."""
    from keras_sam3.models.vision_encoder import SAM3VisionEncoder

    checkpoint = HFCheckpoint(directory)
    encoder = SAM3VisionEncoder(**checkpoint.vision_encoder_kwargs(), dtype=dtype)
    size = checkpoint.image_size()
    encoder.build((None, size, size, 3))
    checkpoint.load_vision_encoder(encoder)
    return encoder


def convert_text_encoder(directory, dtype=None):
    """Builds a `SAM3TextEncoder` from a checkpoint directory and loads it."""
    from keras_sam3.models.text_encoder import SAM3TextEncoder

    checkpoint = HFCheckpoint(directory)
    kwargs = checkpoint.text_encoder_kwargs()
    encoder = SAM3TextEncoder(**kwargs, dtype=dtype)
    encoder.build((None, kwargs["max_sequence_length"]))
    checkpoint.load_text_encoder(encoder)
    return encoder
