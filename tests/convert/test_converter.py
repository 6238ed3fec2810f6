import json

import keras
import numpy as np
import pytest

from keras_sam3 import SAM3TextEncoder
from keras_sam3.convert.hf_checkpoint import HFCheckpoint
from keras_sam3.convert.rename import TEXT_ENCODER_RULES
from keras_sam3.convert.rename import checkpoint_key
from keras_sam3.convert.hf_to_keras import convert_text_encoder
from keras_sam3.convert.rename import weight_map

safetensors_numpy = pytest.importorskip("safetensors.numpy")

TINY_TEXT = dict(
    vocabulary_size=50,
    hidden_dim=16,
    intermediate_dim=32,
    num_layers=1,
    num_heads=2,
    max_sequence_length=8,
    output_dim=8,
)
HF_TEXT_CONFIG = {
    "text_config": {
        "vocab_size": 50,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 8,
        "hidden_act": "gelu",
    },
    "detr_encoder_config": {"hidden_size": 8},
}


def _reference_tensors(prefix=""):
    """Checkpoint tensors (PyTorch layouts) for TINY_TEXT, random."""
    encoder = SAM3TextEncoder(**TINY_TEXT)
    encoder.build((None, 8))
    rng = np.random.default_rng(0)
    tensors = {}
    for key, variable, _ in weight_map(encoder, TEXT_ENCODER_RULES, "text_encoder."):
        shape = tuple(variable.shape)
        if len(shape) == 2 and "embedding" not in key:
            shape = shape[::-1]  # Linear weights are (out, in)
        tensors[prefix + key] = rng.normal(size=shape).astype("float32")
    return tensors


def _write(directory, tensors, config):
    directory.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


def test_rename_table_gives_reference_keys():
    assert (
        checkpoint_key("layers_3/self_attn/out_proj/kernel", TEXT_ENCODER_RULES, "text_encoder.")
        == "text_encoder.text_model.encoder.layers.3.self_attn.out_proj.weight"
    )
    assert (
        checkpoint_key("token_embedding/embeddings", TEXT_ENCODER_RULES, "text_encoder.")
        == "text_encoder.text_model.embeddings.token_embedding.weight"
    )
    assert checkpoint_key("text_projection/bias", TEXT_ENCODER_RULES, "text_encoder.") == (
        "text_projection.bias"
    )


@pytest.mark.parametrize("prefix", ["", "detector_model."])
def test_loads_with_and_without_detector_prefix(tmp_path, prefix):
    tensors = _reference_tensors(prefix)
    if prefix:
        tensors["tracker_neck.fpn_layers.0.proj1.bias"] = np.zeros(3, "float32")
        config = {"detector_config": HF_TEXT_CONFIG}
    else:
        config = HF_TEXT_CONFIG
    directory = _write(tmp_path / "ckpt", tensors, config)
    encoder = convert_text_encoder(directory)
    fc1 = [v for v in encoder.weights if v.path.endswith("layers_0/mlp/fc1/kernel")][0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fc1),
        tensors[prefix + "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"].T,
    )
    checkpoint = HFCheckpoint(directory)
    assert ("tracker_neck.fpn_layers.0.proj1.bias" in checkpoint.other_tensors) == bool(prefix)


def test_missing_tensor_is_named(tmp_path):
    tensors = _reference_tensors()
    del tensors["text_encoder.text_model.encoder.layers.0.mlp.fc2.bias"]
    directory = _write(tmp_path / "ckpt", tensors, HF_TEXT_CONFIG)
    with pytest.raises(ValueError, match=r"missing tensor text_encoder\.text_model\.encoder\.layers\.0\.mlp\.fc2\.bias"):
        convert_text_encoder(directory)


def test_misshaped_tensor_is_named(tmp_path):
    tensors = _reference_tensors()
    key = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight"
    tensors[key] = np.zeros((16, 15), "float32")
    directory = _write(tmp_path / "ckpt", tensors, HF_TEXT_CONFIG)
    with pytest.raises(ValueError, match=r"mis-shaped tensor .*q_proj\.weight"):
        convert_text_encoder(directory)


def test_no_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="never pickle"):
        HFCheckpoint(str(tmp_path))
