"""`SAM3Tokenizer` against the reference `CLIPTokenizer`, both built from the
real CLIP BPE merges that ship in the `open_clip_torch` wheel.

`tools/run_tests.sh` downloads that wheel (no dependencies) into
`.cache/wheels/` before the tests run; nothing is downloaded at test time.
"""

import glob
import os
import random
import warnings
import zipfile

import numpy as np
import pytest

from keras_sam3.models.tokenizer import SAM3Tokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
WHEEL_GLOB = os.path.join(ROOT, ".cache", "wheels", "open_clip_torch-*.whl")
MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def merges_gz(tmp_path_factory):
    wheels = sorted(glob.glob(WHEEL_GLOB))
    assert wheels, (
        f"No open_clip_torch wheel under {os.path.dirname(WHEEL_GLOB)}: run "
        "`bash tools/run_tests.sh` (or `pip download --no-deps open_clip_torch -d .cache/wheels`)."
    )
    target = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        target.write_bytes(wheel.read(MEMBER))
    return str(target)


@pytest.fixture(scope="module")
def tokenizers(merges_gz, tmp_path_factory):
    transformers = pytest.importorskip("transformers", reason="the reference tokenizer")
    ours = SAM3Tokenizer.from_open_clip(merges_gz)
    directory = tmp_path_factory.mktemp("clip_vocab")
    ours.save_assets(str(directory))
    reference = transformers.CLIPTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"), model_max_length=32
    )
    return ours, reference


def _phrases():
    fixed = [
        "a red circle", "Large BLUE square!!", "dog's tail", "café au lait", "2 cats and 13 dogs",
        "   spaced   out  ", "emoji 🐶 dog", "日本語のテキスト", "x-ray / co-op", "DON'T",
        "it's they're we've I'm you'll he'd", "a\tb\nc", "naïve résumé", "12345", "ÀÉÎ",
        "yellow school bus", "the person on the left", "3.14159 is pi", "C++ & C#", "50% off",
        "hello,world", "(parenthesised) [bracketed] {braced}", "Ω≈ç√∫", "ǅemal", "straße",
        "İstanbul", "ﬁne ligature", "zero\u200bwidth", "tab\tseparated\tvalues", "émigré's café",
    ]
    rng = random.Random(0)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" .,;:!?'\"-_/()[]{}&%$#@*+=<>|~^`")
        + list("éèüößñçøåæœαβγδπσωжщяאבגمرحبا中文字日本한국🙂🐱✨")
    )
    generated = []
    for _ in range(300):
        words = []
        for _ in range(rng.randint(1, 8)):
            words.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))))
        generated.append(" ".join(words))
    long = ["a very long prompt " * 12, "red " * 40, "supercalifragilisticexpialidocious " * 5]
    return fixed + generated + long


def test_same_ids_as_the_reference_tokenizer(tokenizers):
    ours, reference = tokenizers
    assert ours.vocabulary_size == 49408
    phrases = _phrases()
    assert len(phrases) >= 300
    mismatches = []
    for phrase in phrases:
        expected = reference(phrase)["input_ids"]  # untruncated: <start> ... <end>
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids, mask = ours([phrase])
        if len(expected) <= 32:
            expected_row = expected + [49407] * (32 - len(expected))
            if ids[0].tolist() != expected_row or mask[0].sum() != len(expected):
                mismatches.append(phrase)
        else:  # we truncate, keeping the end token; the reference does not truncate
            if ids[0].tolist() != expected[:31] + [49407] or mask[0].sum() != 32:
                mismatches.append(phrase)
    assert not mismatches, mismatches[:10]


def test_long_prompts_warn_and_keep_the_end_token(tokenizers):
    ours, _ = tokenizers
    with pytest.warns(UserWarning, match="keeping the first 30"):
        ids, mask = ours(["red " * 40])
    assert ids[0, -1] == ours.end_token_id and mask.sum() == 32


def test_padding_batches_and_round_trip(tokenizers, tmp_path):
    ours, _ = tokenizers
    ids, mask = ours(["a dog", "two red circles"])
    assert ids.shape == mask.shape == (2, 32) and ids.dtype == np.int32
    assert ids[0, 0] == 49406 and mask[0].tolist() == [1] * 4 + [0] * 28
    assert np.all(ids[0, 4:] == 49407)
    assert ours.detokenize(ids[1]) == "two red circles"
    ours.save_assets(str(tmp_path))
    again = SAM3Tokenizer.from_directory(str(tmp_path))
    np.testing.assert_array_equal(again(["a dog", "two red circles"])[0], ids)


def test_non_string_prompt_is_an_error(tokenizers):
    ours, _ = tokenizers
    with pytest.raises(TypeError, match="must be strings"):
        ours([3])


def test_a_checkpoint_with_only_tokenizer_json(tokenizers, tmp_path):
    """Hugging Face repositories may ship `tokenizers`' one-file form alone."""
    ours, reference = tokenizers
    reference.save_pretrained(str(tmp_path))
    for name in ("vocab.json", "merges.txt"):
        if (tmp_path / name).exists():
            os.remove(tmp_path / name)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = SAM3Tokenizer.from_directory(str(tmp_path))
    phrases = _phrases()[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long phrases' truncation warning, twice
        np.testing.assert_array_equal(loaded(phrases)[0], ours(phrases)[0])


def test_a_half_downloaded_tokenizer_is_named(tokenizers, tmp_path):
    ours, _ = tokenizers
    assert SAM3Tokenizer.find_in_directory(str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="No tokenizer"):
        SAM3Tokenizer.from_directory(str(tmp_path))
    ours.save_assets(str(tmp_path))
    os.remove(tmp_path / "merges.txt")
    with pytest.raises(FileNotFoundError, match="has vocab.json but no merges.txt"):
        SAM3Tokenizer.find_in_directory(str(tmp_path))
