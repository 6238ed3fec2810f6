"""The full facebook/sam3 layout (a `Sam3VideoModel` checkpoint), made tiny."""

import numpy as np
import pytest

from keras_sam3.convert.hf_checkpoint import HFCheckpoint
from keras_sam3.convert.hf_to_keras import convert_backbone
from keras_sam3.convert.verify import run_reference
from tests.parity import reference as ref_lib
from tests.parity.reference import transformers
from tests.parity.roi_align_reference import install_in_reference


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    return ref_lib.make_reference_video_checkpoint(tmp_path_factory.mktemp("sam3_video"), seed=5)


def test_every_tensor_is_loaded_or_ignored_with_a_reason(video_checkpoint):
    checkpoint = HFCheckpoint(video_checkpoint)
    prefixes = {k.split(".")[0] for k in checkpoint.other_tensors}
    assert prefixes == {"tracker_model", "tracker_neck"}
    backbone, report = convert_backbone(video_checkpoint)
    ignored = {key for keys in report.ignored.values() for key in keys}
    total = len(checkpoint.tensors) + len(checkpoint.other_tensors)
    assert len(report.loaded) + len(ignored) == total
    assert set(checkpoint.other_tensors) <= ignored
    assert len(report.loaded) == len(backbone.weights)
    summary = report.summary()
    assert f"loaded {len(report.loaded)} tensors" in summary
    assert "tracker" in summary


def test_matches_reference_loaded_from_the_same_file(video_checkpoint):
    install_in_reference()
    reference, info = transformers.Sam3Model.from_pretrained(video_checkpoint, output_loading_info=True)
    assert not info["missing_keys"], info["missing_keys"]  # the reference really loaded the file
    reference.eval()
    backbone, _ = convert_backbone(video_checkpoint)
    rng = np.random.default_rng(0)
    inputs = {
        "images": rng.uniform(-1, 1, (1, 112, 112, 3)).astype("float32"),
        "token_ids": rng.integers(0, 90, (1, 32)).astype("int32"),
        "padding_mask": (np.arange(32) < 6).astype("int32")[None],
        "boxes": np.array([[[0.4, 0.5, 0.3, 0.2]]], "float32"),
        "box_labels": np.array([[1]], "int32"),
    }
    expected = run_reference(reference, inputs)
    ours = backbone.predict_on_batch(inputs)
    for name in ("pred_logits", "pred_boxes", "pred_masks"):
        ref_lib.assert_close(np.asarray(ours[name]), expected[name], 1e-4, name)


def test_unexpected_tensor_is_named(tmp_path, video_checkpoint):
    import shutil

    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    target = tmp_path / "extra"
    shutil.copytree(video_checkpoint, target)
    tensors = load_file(str(target / "model.safetensors"))
    tensors["detector_model.geometry_encoder.points_direct_project.weight"] = np.zeros((16, 2), "float32")
    save_file(tensors, str(target / "model.safetensors"))
    with pytest.raises(ValueError, match=r"points_direct_project"):
        convert_backbone(str(target))
