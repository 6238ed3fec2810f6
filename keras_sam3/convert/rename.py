"""Keras variable paths -> Hugging Face SAM 3 checkpoint keys.

Sublayer names mirror the reference module names, so a Keras variable path
becomes a checkpoint key through an ordered rename table, and the tensor
through one of three layout transforms (dense, conv, transposed conv).
Numpy only: no torch is needed to convert.
"""

import re

import keras
import numpy as np

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

TRACKER_PROMPT_ENCODER_RULES = [
    (r"^shared_embedding_positional_embedding$", "shared_embedding/positional_embedding"),
]

MASK_DECODER_RULES = [
    (r"^(conv_layers|norms)_", r"pixel_decoder/\1_"),
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
