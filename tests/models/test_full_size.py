"""The default (facebook/sam3) architecture, built full size.

Builds `SAM3Backbone` at the default configuration (about 840M parameters,
~3.4 GB of float32, 15-30 s per backend) and checks it against the real
checkpoint's layout: `tests/data/facebook_sam3_checkpoint_keys.txt` lists
every tensor of `facebook/sam3` with its shape (copied from the reference
spec, `shared/reference/hf_facebook_sam3_checkpoint_keys.txt`). Every
detector tensor must map onto one of our variables with the right shape, or
be on the converter's ignore list; parameter counts equal the reference's.
"""

import os

import numpy as np
import pytest

from keras_sam3.convert.hf_checkpoint import HFCheckpoint
from keras_sam3.convert.hf_to_keras import BACKBONE_COMPONENTS
from keras_sam3.convert.hf_to_keras import build_backbone
from keras_sam3.convert.hf_to_keras import ignore_reason
from keras_sam3.convert.rename import weight_map
from keras_sam3.presets import list_presets

KEYS_FILE = os.path.join(os.path.dirname(__file__), "..", "data", "facebook_sam3_checkpoint_keys.txt")

# Reference counts (spec section 16), per component.
REFERENCE_PARAMS = {
    "vision_encoder": 446_236_672 + 7_802_112,
    "text_encoder": 352_937_984 + 262_400,  # CLIP text model + 1024->256 resizer
    "geometry_encoder": 8_083_456,
    "detr_encoder": 9_472_512,
    "detr_decoder": 11_575_093,
    "scoring": 1_182_976,
    "mask_decoder": 2_298_881 - 590_592,  # without the never-called third stage
}
NOT_BUILT = 524_288 + 590_592  # CLIP's unused text_projection; pixel-decoder stage 2
REFERENCE_TOTAL = 840_376_374


def _file_layout():
    layout = {}
    with open(KEYS_FILE) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.rstrip("\n").split("\t")[:2]
            layout[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return layout


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(HFCheckpoint.from_state({}, {}))  # the default config


@pytest.mark.full_size
def test_parameter_counts_equal_the_reference(backbone):
    for name, expected in REFERENCE_PARAMS.items():
        assert getattr(backbone, name).count_params() == expected, name
    assert backbone.count_params() == REFERENCE_TOTAL - NOT_BUILT
    # The registered preset states the same count.
    assert list_presets()["sam3"]["params"] == backbone.count_params()
    assert list_presets()["sam3"]["reference_params"] == REFERENCE_TOTAL
    # RoPE / positions are constants: the only non-trainable weights are the
    # neck level the concept model does not read (frozen, see SAM3Backbone).
    frozen = backbone.non_trainable_weights
    assert frozen and all("fpn_layers_3" in w.path for w in frozen)


@pytest.mark.full_size
def test_every_facebook_sam3_tensor_maps_or_is_ignored(backbone):
    layout = _file_layout()
    assert len(layout) == 1797
    detector = {k[len("detector_model."):]: v for k, v in layout.items() if k.startswith("detector_model.")}
    assert len(detector) == 1468
    mapped = {}
    for attribute, prefix, rules in BACKBONE_COMPONENTS:
        for key, variable, transform in weight_map(getattr(backbone, attribute), rules, prefix):
            assert key in detector, f"{variable.path} maps to {key}, not in facebook/sam3"
            converted = transform(np.zeros(detector[key], dtype=np.int8)).shape
            assert tuple(converted) == tuple(variable.shape), key
            mapped[key] = variable
    assert len(mapped) == len(backbone.weights)
    for key in layout:
        short = key[len("detector_model."):] if key.startswith("detector_model.") else key
        if short not in mapped:
            assert ignore_reason(short) is not None, f"{key} is neither loaded nor ignored"
