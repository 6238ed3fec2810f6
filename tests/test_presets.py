"""`from_preset` from every source, the hub ones through their real code
path (keras-hub's `get_file`, `huggingface_hub`, `kagglehub`) served from
local stand-ins: nothing is downloaded."""

import fnmatch
import os
import shutil

import keras
import numpy as np
import pytest

from keras_sam3 import presets
from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter
from tests.models.tiny import tiny_segmenter
from tests.parity import reference as ref_lib


@pytest.fixture(scope="module")
def keras_preset(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("keras_preset"))
    segmenter = tiny_segmenter()
    segmenter.save_to_preset(directory)
    return directory, segmenter


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """A tiny checkpoint in the facebook/sam3 layout, with tokenizer files."""
    directory = str(tmp_path_factory.mktemp("hf_checkpoint"))
    ref_lib.make_reference_video_checkpoint(directory, seed=4, text_vocab=514)  # the toy tokenizer's size
    tiny_segmenter().preprocessor.tokenizer.save_assets(directory)
    return directory


def _same_results(a, b):
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype("uint8")
    ra = a.segment(image, prompts="a", threshold=0.0)[0]
    rb = b.segment(image, prompts="a", threshold=0.0)[0]
    np.testing.assert_allclose(ra["scores"], rb["scores"], atol=1e-6)


def test_registered_presets_are_defined():
    registered = presets.list_presets()
    assert registered["sam3"]["source"] == "hf://facebook/sam3"
    # The count is checked against the built model in tests/models/test_full_size.py.
    assert registered["sam3"]["params"] == 839_261_494


def test_local_keras_preset(keras_preset):
    directory, segmenter = keras_preset
    _same_results(SAM3PromptableConceptImageSegmenter.from_preset(directory), segmenter)


def test_hf_keras_preset_through_hf_hub_download(monkeypatch, keras_preset):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import EntryNotFoundError
    from keras_hub.src.utils import preset_utils

    directory, segmenter = keras_preset
    requested = []

    def fake_download(repo_id, filename, **kwargs):
        requested.append((repo_id, filename))
        path = os.path.join(directory, filename)
        if not os.path.exists(path):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return path

    monkeypatch.setattr(preset_utils.huggingface_hub, "hf_hub_download", fake_download)
    loaded = SAM3PromptableConceptImageSegmenter.from_preset("hf://someone/sam3-keras")
    assert ("someone/sam3-keras", "metadata.json") in requested
    assert ("someone/sam3-keras", "assets/tokenizer/vocab.json") in requested
    _same_results(loaded, segmenter)


def test_kaggle_keras_preset_through_kagglehub(monkeypatch, keras_preset):
    from keras_hub.src.utils import preset_utils

    if preset_utils.kagglehub is None:
        pytest.importorskip("kagglehub", reason="kaggle:// presets need kagglehub")
    directory, segmenter = keras_preset
    requested = []

    def fake_model_download(handle, path=None, **kwargs):
        requested.append((handle, path))
        full = os.path.join(directory, path)
        if not os.path.exists(full):
            raise ValueError(f"'{path}' is not present in the model files")
        return full

    monkeypatch.setattr(preset_utils.kagglehub, "model_download", fake_model_download)
    loaded = SAM3PromptableConceptImageSegmenter.from_preset("kaggle://someone/sam3/keras/tiny/1")
    assert ("someone/sam3/keras/tiny/1", "metadata.json") in requested
    _same_results(loaded, segmenter)


def test_hf_checkpoint_directory_is_converted_on_the_fly(hf_checkpoint):
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset(hf_checkpoint)
    assert segmenter.preprocessor is not None
    assert segmenter.backbone.image_size == 112
    image = np.zeros((30, 30, 3), "uint8")
    assert segmenter.segment(image, prompts="a", threshold=0.0)[0]["masks"].shape == (6, 30, 30)


def serve_checkpoint_as_hf_id(monkeypatch, checkpoint, download):
    """`hf://` ids resolve to `checkpoint`, copied into `download` through
    the patterns `snapshot_download` is given, as the hub client filters;
    they hold no Keras preset. Returns the list of requested repository ids."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import EntryNotFoundError
    from keras_hub.src.utils import preset_utils

    def no_keras_files(repo_id, filename, **kwargs):
        raise EntryNotFoundError(f"{filename} not in {repo_id}")

    snapshots = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        snapshots.append(repo_id)
        os.makedirs(download, exist_ok=True)
        for name in os.listdir(checkpoint):
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                shutil.copy(os.path.join(checkpoint, name), download)
        return download

    monkeypatch.setattr(preset_utils.huggingface_hub, "hf_hub_download", no_keras_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    return snapshots


def test_hf_id_of_a_checkpoint_goes_through_snapshot_download(monkeypatch, hf_checkpoint, tmp_path):
    download = str(tmp_path / "snapshot")
    snapshots = serve_checkpoint_as_hf_id(monkeypatch, hf_checkpoint, download)
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset("hf://facebook/sam3")
    assert snapshots == ["facebook/sam3"]
    assert sorted(os.listdir(download)) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert segmenter.backbone.image_size == 112
    _same_results(segmenter, SAM3PromptableConceptImageSegmenter.from_preset(hf_checkpoint))


def test_registered_name_resolves_to_its_source(monkeypatch, hf_checkpoint):
    monkeypatch.setattr(presets, "list_presets", lambda: {"tiny": {"name": "tiny", "source": hf_checkpoint}})
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset("tiny")
    assert segmenter.backbone.detr_decoder.num_queries == 6


def test_a_directory_named_like_a_registered_preset_is_warned_about(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    os.makedirs("sam3_shapes")
    with pytest.warns(UserWarning, match=r"registered preset and also a directory here.*'\./sam3_shapes'"):
        source = presets.resolve_preset_name("sam3_shapes")
    assert source == os.path.join(presets.PRESETS_DIR, "sam3_shapes")
    assert presets.resolve_preset_name("./sam3_shapes") == "./sam3_shapes"


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="Unknown preset 'no_such_preset'"):
        SAM3PromptableConceptImageSegmenter.from_preset("no_such_preset")


def test_backbone_only_keras_preset_loads_without_a_tokenizer(tmp_path, keras_preset):
    _, segmenter = keras_preset
    segmenter.backbone.save_to_preset(str(tmp_path / "backbone_only"))
    loaded = SAM3PromptableConceptImageSegmenter.from_preset(str(tmp_path / "backbone_only"))
    assert loaded.preprocessor is None
    with pytest.raises(ValueError, match=r"has no preprocessor \(loaded from a preset or checkpoint without tokenizer files"):
        loaded.segment(np.zeros((8, 8, 3), "uint8"), prompts="a")


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_a_dtype_asked_of_from_preset_reaches_every_layer(keras_preset, dtype):
    """keras-hub's `from_preset(dtype=...)` set only the outer model's policy:
    every component restored its saved float32 and computed in it."""
    from keras_sam3 import SAM3Backbone

    directory, segmenter = keras_preset
    for backbone in (
        SAM3PromptableConceptImageSegmenter.from_preset(directory, dtype=dtype).backbone,
        SAM3Backbone.from_preset(directory, dtype=dtype),
    ):
        layers = [l for l in backbone._flatten_layers() if not isinstance(l, keras.layers.InputLayer)]
        policies = {layer.dtype_policy.name for layer in layers}
        assert policies == {dtype}, policies
        variables = {v.dtype for v in backbone.weights}
        assert variables == {"bfloat16" if dtype == "bfloat16" else "float32"}, variables
        # Same weights as saved, to the dtype's precision.
        for ours, saved in zip(backbone.weights, segmenter.backbone.weights):
            np.testing.assert_allclose(
                np.asarray(ours.numpy(), "float32"), saved.numpy(), rtol=1e-2, atol=1e-6
            )
    plain = SAM3Backbone.from_preset(directory)
    assert {layer.dtype_policy.name for layer in plain._flatten_layers()} == {"float32"}
    assert {v.dtype for v in plain.weights} == {"float32"}


def test_backbone_from_preset_takes_every_source(hf_checkpoint):
    from keras_sam3 import SAM3Backbone

    shipped = SAM3Backbone.from_preset("sam3_shapes")  # a registered name
    assert shipped.count_params() == presets.list_presets()["sam3_shapes"]["params"]
    converted = SAM3Backbone.from_preset(hf_checkpoint)  # a Hugging Face checkpoint
    assert converted.image_size == 112
    with pytest.raises(ValueError, match="is not a Keras preset"):
        SAM3Backbone.from_preset(hf_checkpoint, load_weights=False)
    with pytest.raises(ValueError, match="Unknown preset 'no_such_preset'"):
        SAM3Backbone.from_preset("no_such_preset")


def _preprocessed(preprocessor):
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3)).astype("uint8")
    inputs, sizes = preprocessor(image, prompts="a red circle", boxes=[[(5, 6, 30, 20)]])
    return inputs, sizes


def _assert_same_preprocessing(loaded, expected):
    from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
    from keras_sam3.models.tokenizer import SAM3Tokenizer

    assert isinstance(loaded, SAM3PromptableConceptImageSegmenterPreprocessor)
    assert isinstance(loaded.tokenizer, SAM3Tokenizer)
    assert loaded.image_converter.image_size == expected.image_converter.image_size
    assert loaded.tokenizer.sequence_length == expected.tokenizer.sequence_length
    assert loaded.tokenizer.vocabulary == expected.tokenizer.vocabulary
    (got, got_sizes), (want, want_sizes) = _preprocessed(loaded), _preprocessed(expected)
    assert got_sizes == want_sizes and sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_preprocessor_and_tokenizer_from_a_registered_name_and_a_keras_preset(keras_preset):
    from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor as Preprocessor
    from keras_sam3 import SAM3Tokenizer

    directory, segmenter = keras_preset
    _assert_same_preprocessing(Preprocessor.from_preset(directory), segmenter.preprocessor)
    ids, _ = SAM3Tokenizer.from_preset(directory)(["a red circle"])
    np.testing.assert_array_equal(ids, segmenter.preprocessor.tokenizer(["a red circle"])[0])
    shipped = SAM3PromptableConceptImageSegmenter.from_preset("sam3_shapes")
    _assert_same_preprocessing(Preprocessor.from_preset("sam3_shapes"), shipped.preprocessor)
    assert SAM3Tokenizer.from_preset("sam3_shapes").sequence_length == 16  # the embedded model's
    with pytest.raises(ValueError, match="is built for 128 px"):
        Preprocessor.from_preset("sam3_shapes", image_size=256)


def test_preprocessor_from_a_hub_keras_preset_reads_no_weights(monkeypatch, keras_preset):
    pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import EntryNotFoundError
    from keras_hub.src.utils import preset_utils

    from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor as Preprocessor

    directory, segmenter = keras_preset
    requested = []

    def fake_download(repo_id, filename, **kwargs):
        requested.append(filename)
        path = os.path.join(directory, filename)
        if not os.path.exists(path):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return path

    monkeypatch.setattr(preset_utils.huggingface_hub, "hf_hub_download", fake_download)
    _assert_same_preprocessing(Preprocessor.from_preset("hf://someone/sam3-keras"), segmenter.preprocessor)
    assert "config.json" in requested and "assets/tokenizer/merges.txt" in requested
    assert not [name for name in requested if name.endswith((".h5", ".weights.json"))], requested


def test_preprocessor_from_a_checkpoint_downloads_no_weights(monkeypatch, hf_checkpoint, tmp_path):
    from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor as Preprocessor
    from keras_sam3 import SAM3Tokenizer

    expected = SAM3PromptableConceptImageSegmenter.from_preset(hf_checkpoint).preprocessor
    _assert_same_preprocessing(Preprocessor.from_preset(hf_checkpoint), expected)
    resized = Preprocessor.from_preset(hf_checkpoint, image_size=224)  # converted at another size
    assert resized.image_converter.image_size == 224

    download = str(tmp_path / "snapshot")
    serve_checkpoint_as_hf_id(monkeypatch, hf_checkpoint, download)
    _assert_same_preprocessing(Preprocessor.from_preset("hf://facebook/sam3"), expected)
    assert sorted(os.listdir(download)) == ["config.json", "merges.txt", "vocab.json"]  # no safetensors
    assert SAM3Tokenizer.from_preset("hf://facebook/sam3").vocabulary == expected.tokenizer.vocabulary


def test_preprocessor_from_a_source_without_tokenizer_files_is_refused(tmp_path, keras_preset, hf_checkpoint):
    from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor as Preprocessor
    from keras_sam3 import SAM3Tokenizer

    _, segmenter = keras_preset
    backbone_only = str(tmp_path / "backbone_only")
    segmenter.backbone.save_to_preset(backbone_only)
    weights_only = str(tmp_path / "weights_only")
    os.makedirs(weights_only)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(hf_checkpoint, name), weights_only)
    for source in (backbone_only, weights_only):
        for load in (Preprocessor.from_preset, SAM3Tokenizer.from_preset):
            with pytest.raises(ValueError, match="ships no tokenizer files"):
                load(source)
    with pytest.raises(ValueError, match="Unknown preset 'no_such_preset'"):
        Preprocessor.from_preset("no_such_preset")
