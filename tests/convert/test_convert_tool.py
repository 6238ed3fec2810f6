import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_sam3 import SAM3Backbone
from keras_sam3.convert import sources
from tests.parity import reference as ref_lib

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    return ref_lib.make_reference_video_checkpoint(tmp_path_factory.mktemp("sam3_video"), seed=2)


def test_command_line_converts_verifies_and_summarises(tmp_path, video_checkpoint):
    import shutil

    from tests.models.tiny import toy_tokenizer

    source = tmp_path / "checkpoint"
    shutil.copytree(video_checkpoint, source)
    toy_tokenizer().save_assets(str(source))  # a checkpoint that ships its vocabulary
    video_checkpoint = str(source)
    output = tmp_path / "preset"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "convert_checkpoint.py"),
            video_checkpoint,
            str(output),
            "--reference-text-only",
            "--verify",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loading detr_decoder" in result.stdout
    assert "pred_masks: max|diff|" in result.stdout
    assert "ignored" in result.stdout and "tracker" in result.stdout
    config = json.loads((output / "config.json").read_text())
    assert config["registered_name"] == "keras_sam3>SAM3Backbone"
    backbone = SAM3Backbone.from_preset(str(output))
    assert backbone.geometry_encoder.cls_without_boxes is False
    assert "saved the tokenizer's vocabulary" in result.stdout
    assert (output / "assets" / "tokenizer" / "vocab.json").exists()


def test_the_preset_is_saved_before_a_verification_that_cannot_run(tmp_path, video_checkpoint):
    """Meta's model (geometry CLS token) is verified through the reference's
    box path, which needs torchvision; where it is missing the command fails
    after the conversion is on disk, not before."""
    import importlib.util

    output = tmp_path / "preset"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "convert_checkpoint.py"), video_checkpoint, str(output), "--verify"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert (output / "config.json").exists(), result.stdout + result.stderr
    if importlib.util.find_spec("torchvision") is None:
        assert result.returncode != 0 and "torchvision" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stdout + result.stderr


def test_preset_round_trip_gives_identical_outputs(tmp_path, video_checkpoint):
    from keras_sam3.convert.hf_to_keras import convert_backbone

    backbone, _ = convert_backbone(video_checkpoint)
    backbone.save_to_preset(str(tmp_path / "p"))
    restored = SAM3Backbone.from_preset(str(tmp_path / "p"))
    rng = np.random.default_rng(0)
    inputs = {
        "images": rng.uniform(-1, 1, (1, 112, 112, 3)).astype("float32"),
        "token_ids": rng.integers(0, 90, (1, 32)).astype("int32"),
        "padding_mask": np.ones((1, 32), "int32"),
        "boxes": np.array([[[0.5, 0.5, 0.2, 0.2]]], "float32"),
        "box_labels": np.array([[1]], "int32"),
    }
    a, b = backbone.predict_on_batch(inputs), restored.predict_on_batch(inputs)
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def test_hf_sources_go_through_the_hub_download(monkeypatch, video_checkpoint):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return video_checkpoint

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert sources.resolve_checkpoint("hf://facebook/sam3", revision="main") == video_checkpoint
    assert calls == [("facebook/sam3", "main", ("*.json", "*.safetensors", "merges.txt"))]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory nor an hf:// id"):
        sources.resolve_checkpoint(str(tmp_path / "nope"))


def test_verify_covers_boxes_only_with_torchvision(video_checkpoint):
    from keras_sam3.convert.hf_to_keras import convert_backbone
    from keras_sam3.convert.verify import _has_torchvision
    from keras_sam3.convert.verify import verify_backbone

    backbone, _ = convert_backbone(video_checkpoint)
    if _has_torchvision():
        results = verify_backbone(backbone, video_checkpoint)
        assert all(error <= bound for error, bound in results.values())
    else:
        with pytest.raises(ValueError, match="cls_without_boxes=False"):
            verify_backbone(backbone, video_checkpoint)
