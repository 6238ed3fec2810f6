"""Vision and text encoders against the reference `Sam3Model`, float32.

`max|ours - ref| <= 1e-5 * max(1, max|ref|)` on every FPN level, every
position encoding, the ViT output and the projected text features.
"""

import keras
import numpy as np
import pytest

from keras_sam3.convert.hf_to_keras import convert_text_encoder
from keras_sam3.convert.hf_to_keras import convert_vision_encoder
from tests.parity import reference as ref_lib
from tests.parity.reference import torch

TOL = 1e-5


@pytest.fixture(scope="module", params=[112, 126], ids=["grid8", "grid9_padded"])
def vision_pair(request, tmp_path_factory):
    """(reference model, converted encoder) at an image size; 126 px gives a
    9 x 9 grid that windows of 4 must pad."""
    size = request.param
    model = ref_lib.make_reference_model(ref_lib.tiny_sam3_config(size), seed=size)
    directory = ref_lib.save_reference(model, tmp_path_factory.mktemp(f"sam3_{size}"))
    return size, model, convert_vision_encoder(directory)


@pytest.fixture(scope="module")
def text_pair(tmp_path_factory):
    model = ref_lib.make_reference_model(ref_lib.tiny_sam3_config(), seed=1)
    directory = ref_lib.save_reference(model, tmp_path_factory.mktemp("sam3_text"))
    return model, convert_text_encoder(directory)


def test_vision_encoder_parity(vision_pair):
    size, model, encoder = vision_pair
    rng = np.random.default_rng(size)
    pixels = rng.uniform(-1, 1, (2, size, size, 3)).astype("float32")
    with torch.no_grad():
        expected = model.get_vision_features(
            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        )
    ours = {k: keras.ops.convert_to_numpy(v) for k, v in encoder(pixels).items()}
    grid = size // 14
    ref_lib.assert_close(
        ours["last_hidden_state"].reshape(2, grid * grid, -1),
        ref_lib.to_numpy(expected.last_hidden_state),
        TOL,
        "last_hidden_state",
    )
    assert len(expected.fpn_hidden_states) == 4
    for i, (features, position) in enumerate(
        zip(expected.fpn_hidden_states, expected.fpn_position_encoding)
    ):
        ref_lib.assert_close(
            ours[f"fpn_hidden_states_{i}"],
            ref_lib.nchw_to_nhwc(features),
            TOL,
            f"fpn_hidden_states_{i}",
        )
        ref_position = ref_lib.nchw_to_nhwc(position)
        ours_position = np.broadcast_to(
            ours[f"fpn_position_encoding_{i}"], ref_position.shape
        )
        ref_lib.assert_close(
            ours_position, ref_position, TOL, f"fpn_position_encoding_{i}"
        )


def _text_inputs():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, ref_lib.TEXT_VOCAB - 2, size=(3, 32)).astype("int32")
    mask = np.ones((3, 32), "int32")
    for row, length in enumerate((32, 9, 2)):
        ids[row, length:] = ref_lib.TEXT_PAD_ID
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("with_mask", [True, False], ids=["padding_mask", "no_mask"])
def test_text_encoder_parity(text_pair, with_mask):
    model, encoder = text_pair
    ids, mask = _text_inputs()
    with torch.no_grad():
        expected = model.get_text_features(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long() if with_mask else None,
        ).pooler_output
    ours = encoder(ids, mask if with_mask else None)
    ref_lib.assert_close(
        keras.ops.convert_to_numpy(ours["text_features"]),
        ref_lib.to_numpy(expected),
        TOL,
        "text_features",
    )
    text_mask = keras.ops.convert_to_numpy(ours["text_mask"])
    np.testing.assert_array_equal(text_mask, mask.astype(bool) if with_mask else True)
