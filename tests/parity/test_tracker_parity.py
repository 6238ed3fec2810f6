"""The tracker's prompt encoder and mask decoder against the reference `Sam3Tracker*` modules."""

import sys

import keras
import numpy as np
import pytest

from keras_sam3.convert.rename import TRACKER_PROMPT_ENCODER_RULES
from keras_sam3.convert.rename import load_weights
from keras_sam3.models.tracker_prompt_encoder import SAM3TrackerPromptEncoder
from tests.parity import reference as ref_lib
from tests.parity.reference import torch
from tests.parity.reference import transformers

SIZE, PATCH, D = 112, 14, 16


@pytest.fixture(scope="module")
def pair():
    module = sys.modules[transformers.Sam3TrackerModel.__module__]
    config = transformers.Sam3TrackerPromptEncoderConfig(hidden_size=D, image_size=SIZE, patch_size=PATCH)
    torch.manual_seed(0)
    reference = module.Sam3TrackerPromptEncoder(config).eval()
    ref_lib.perturb_constant_parameters(reference)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.5)
    tensors = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    ours = SAM3TrackerPromptEncoder(hidden_dim=D, image_size=SIZE, patch_size=PATCH)
    ours.build()
    loaded = load_weights(ours, tensors, TRACKER_PROMPT_ENCODER_RULES, "")
    assert sorted(loaded) == sorted(tensors)  # every tensor, the Fourier buffer included
    return reference, ours


def _compare(pair, points=None, labels=None, boxes=None, masks=None):
    reference, ours = pair
    t = lambda a: None if a is None else torch.from_numpy(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        ref_sparse, ref_dense = reference(
            t(points), None if labels is None else t(labels).long(), t(boxes),
            None if masks is None else t(np.transpose(masks, (0, 3, 1, 2)).copy()),
        )
    sparse, dense = ours(points=points, labels=labels, boxes=boxes, masks=masks)
    ref_lib.assert_close(keras.ops.convert_to_numpy(sparse), ref_sparse.numpy(), 1e-5, "sparse")
    ref_lib.assert_close(keras.ops.convert_to_numpy(dense), ref_lib.nchw_to_nhwc(ref_dense), 1e-5, "dense")


def _points():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, SIZE, (2, 3, 4, 2)).astype("float32")
    labels = rng.choice([1, 0, -1, -10], size=(2, 3, 4)).astype("int32")
    return points, labels


def test_points_only(pair):
    _compare(pair, *_points())


def test_boxes_only(pair):
    boxes = np.array([[[10, 20, 60, 90], [0, 0, 112, 112], [30, 5, 40, 15]]] * 2, "float32")
    _compare(pair, boxes=boxes)


def test_points_and_boxes_with_a_mask(pair):
    points, labels = _points()
    boxes = np.array([[[10, 20, 60, 90], [0, 0, 112, 112], [30, 5, 40, 15]]] * 2, "float32")
    masks = np.random.default_rng(1).normal(size=(2, 4 * SIZE // PATCH, 4 * SIZE // PATCH, 1)).astype("float32")
    _compare(pair, points, labels, boxes, masks)


def test_image_positional_embeddings(pair):
    reference, ours = pair
    module = sys.modules[transformers.Sam3TrackerModel.__module__]
    grid = SIZE // PATCH
    ones = torch.ones((grid, grid))
    y = (ones.cumsum(0) - 0.5) / grid
    x = (ones.cumsum(1) - 0.5) / grid
    with torch.no_grad():
        expected = reference.shared_embedding(torch.stack([x, y], dim=-1)[None])  # the reference's recipe
    del module
    ours_pe = keras.ops.convert_to_numpy(ours.image_positional_embeddings())
    ref_lib.assert_close(ours_pe, expected.numpy(), 1e-5, "image positional embeddings")


# --- the mask decoder -----------------------------------------------------

from keras_sam3.models.tracker_mask_decoder import SAM3TrackerMaskDecoder  # noqa: E402


@pytest.fixture(scope="module")
def decoder_pair():
    module = sys.modules[transformers.Sam3TrackerModel.__module__]
    config = transformers.Sam3TrackerMaskDecoderConfig(
        hidden_size=D, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16
    )
    torch.manual_seed(1)
    reference = module.Sam3TrackerMaskDecoder(config).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 0.4)
    tensors = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    ours = SAM3TrackerMaskDecoder(hidden_dim=D, mlp_dim=32, num_heads=2, iou_head_hidden_dim=16)
    ours.build()
    loaded = load_weights(ours, tensors, [], "")
    assert sorted(loaded) == sorted(tensors)
    return reference, ours


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
def test_mask_decoder(decoder_pair, multimask):
    reference, ours = decoder_pair
    rng = np.random.default_rng(2)
    b, p, t, g = 2, 3, 4, SIZE // PATCH
    image = rng.normal(size=(b, g, g, D)).astype("float32")
    pe = rng.normal(size=(1, g, g, D)).astype("float32")
    sparse = rng.normal(size=(b, p, t, D)).astype("float32")
    dense = rng.normal(size=(b, g, g, D)).astype("float32")
    s0 = rng.normal(size=(b, 4 * g, 4 * g, D // 8)).astype("float32")
    s1 = rng.normal(size=(b, 2 * g, 2 * g, D // 4)).astype("float32")
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))  # noqa: E731
    with torch.no_grad():
        masks, iou, _, obj = reference(
            image_embeddings=nchw(image),
            image_positional_embeddings=nchw(np.repeat(pe, b, 0)),
            sparse_prompt_embeddings=torch.from_numpy(sparse),
            dense_prompt_embeddings=nchw(dense),
            multimask_output=multimask,
            high_resolution_features=[nchw(s0), nchw(s1)],
        )
    out = ours(image, pe, sparse, dense, [s0, s1], multimask_output=multimask)
    ref_lib.assert_close(keras.ops.convert_to_numpy(out["masks"]), masks.numpy(), 1e-4, "masks")
    ref_lib.assert_close(keras.ops.convert_to_numpy(out["iou_scores"]), iou.numpy(), 1e-4, "iou_scores")
    ref_lib.assert_close(
        keras.ops.convert_to_numpy(out["object_score_logits"]), obj.numpy(), 1e-4, "object_score_logits"
    )
