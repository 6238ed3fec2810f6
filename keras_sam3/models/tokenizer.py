"""`SAM3Tokenizer`: CLIP's byte-level BPE, as SAM 3's processor uses it.

Text is NFC-normalized, runs of whitespace collapse to one space, and it is
lowercased; it is split with CLIP's pattern (contractions, letter runs,
single digits, runs of other symbols), each piece is mapped to byte-level
characters and merged by BPE with `</w>` closing the piece. Sequences are
`<|startoftext|> tokens <|endoftext|>`, padded with `<|endoftext|>` (49407)
to 32 ids. Longer prompts are truncated, keeping the end token, with a
warning (the reference processor would emit more than 32 ids and break).

Pure Python and numpy: tokenization happens before the model, on the host.
"""

import functools
import gzip
import json
import os
import unicodedata
import warnings

import numpy as np
import regex

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
VOCABULARY_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
FAST_TOKENIZER_FILE = "tokenizer.json"  # Hugging Face `tokenizers`' one-file form


@functools.lru_cache()
def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def vocabulary_from_merges(merges):
    """CLIP's vocabulary built from its merges, as open_clip does."""
    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m) for m in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {t: i for i, t in enumerate(tokens)}


def read_open_clip_merges(path, num_merges=49152 - 256 - 2):
    """Merges from open_clip's `bpe_simple_vocab_16e6.txt.gz` (first line is a header)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(line.split()) for line in lines[1 : num_merges + 1]]


class SAM3Tokenizer:
    """CLIP BPE tokenizer for SAM 3 prompts.

    Args:
        vocabulary: dict token -> id, or a path to a `vocab.json`.
        merges: list of `(a, b)` pairs, or a path to a `merges.txt`.
        sequence_length: int. Ids per prompt. Defaults to `32`.

    Example (the real CLIP merges ship in the `open_clip_torch` wheel as
    `open_clip/bpe_simple_vocab_16e6.txt.gz`):

    ```python
    tokenizer = SAM3Tokenizer.from_open_clip("bpe_simple_vocab_16e6.txt.gz")
    ```

    and on the small vocabulary of `keras_sam3.data`:

    >>> from keras_sam3.data import shapes_tokenizer
    >>> ids, mask = shapes_tokenizer()(["a red circle", "dog"])
    >>> tuple(ids.shape), mask[0, :6].tolist()  # start, a, red, circle, end
    ((2, 32), [1, 1, 1, 1, 1, 0])
    """

    def __init__(self, vocabulary, merges, sequence_length=32):
        if isinstance(vocabulary, str):
            with open(vocabulary, encoding="utf-8") as f:
                vocabulary = json.load(f)
        if isinstance(merges, str):
            with open(merges, encoding="utf-8") as f:
                lines = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
            merges = [tuple(l.split()) for l in lines]
        self.vocabulary = dict(vocabulary)
        self.merges = [tuple(m) for m in merges]
        self.sequence_length = sequence_length
        self._ranks = {m: i for i, m in enumerate(self.merges)}
        self._byte_encoder = bytes_to_unicode()
        self._decoder = {i: t for t, i in self.vocabulary.items()}
        self.start_token_id = self.vocabulary[START_TOKEN]
        self.end_token_id = self.vocabulary[END_TOKEN]
        self.pad_token_id = self.end_token_id
        self._cache = {}

    @classmethod
    def from_preset(cls, preset):
        """The tokenizer of any source `SAM3PromptableConceptImageSegmenter.from_preset`
        reads (a registered name, a Keras preset, a Hugging Face checkpoint),
        without loading its weights; its sequence length is the model's.

        Raises:
            ValueError: the preset ships no tokenizer (a backbone-only Keras
                preset, a weights-only checkpoint).
        """
        from keras_sam3.presets import load_tokenizer_and_image_size

        return load_tokenizer_and_image_size(preset, require_tokenizer=True)[0]

    @classmethod
    def from_open_clip(cls, merges_gz, sequence_length=32):
        merges = read_open_clip_merges(merges_gz)
        return cls(vocabulary_from_merges(merges), merges, sequence_length)

    @classmethod
    def from_directory(cls, directory, sequence_length=32):
        """From `vocab.json` and `merges.txt`, or else from `tokenizer.json`
        (a Hugging Face checkpoint or a preset).

        Raises:
            FileNotFoundError: the directory holds neither, or only one of
                `vocab.json` and `merges.txt` without a `tokenizer.json`.
        """
        tokenizer = cls.find_in_directory(directory, sequence_length)
        if tokenizer is None:
            raise FileNotFoundError(
                f"No tokenizer in {directory!r}: it has neither {VOCABULARY_FILE} and "
                f"{MERGES_FILE} nor {FAST_TOKENIZER_FILE}."
            )
        return tokenizer

    @classmethod
    def find_in_directory(cls, directory, sequence_length=32):
        """The tokenizer a checkpoint directory ships, or `None` if it ships
        none (a weights-only checkpoint). See `from_directory`."""
        vocabulary = os.path.join(directory, VOCABULARY_FILE)
        merges = os.path.join(directory, MERGES_FILE)
        if os.path.exists(vocabulary) and os.path.exists(merges):
            return cls(vocabulary, merges, sequence_length)
        fast = os.path.join(directory, FAST_TOKENIZER_FILE)
        if os.path.exists(fast):
            with open(fast, encoding="utf-8") as f:
                model = json.load(f).get("model", {})
            if model.get("type") != "BPE" or "vocab" not in model or "merges" not in model:
                raise ValueError(f"{fast} does not hold a BPE tokenizer (model type {model.get('type')!r}).")
            # `tokenizers` writes merges as "a b" strings (older) or [a, b] pairs.
            pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
            return cls(model["vocab"], pairs, sequence_length)
        present = [n for n in (VOCABULARY_FILE, MERGES_FILE) if os.path.exists(os.path.join(directory, n))]
        if present:
            missing = MERGES_FILE if present == [VOCABULARY_FILE] else VOCABULARY_FILE
            raise FileNotFoundError(
                f"{directory!r} has {present[0]} but no {missing} (and no {FAST_TOKENIZER_FILE}): "
                "the tokenizer needs both; the download may be incomplete."
            )
        return None

    def save_assets(self, directory):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, VOCABULARY_FILE), "w", encoding="utf-8") as f:
            json.dump(self.vocabulary, f, ensure_ascii=False)
        with open(os.path.join(directory, MERGES_FILE), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in self.merges) + "\n")

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def _bpe(self, piece):
        if piece in self._cache:
            return self._cache[piece]
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self._ranks.get(p, float("inf")))
            if best not in self._ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[piece] = word
        return word

    @staticmethod
    def normalize(text):
        text = unicodedata.normalize("NFC", text)
        return regex.sub(r"\s+", " ", text).lower()

    def tokenize(self, text):
        """Token ids of one prompt, without start / end tokens."""
        ids = []
        for piece in _PATTERN.findall(self.normalize(text)):
            if piece in (START_TOKEN, END_TOKEN):
                ids.append(self.vocabulary[piece])
                continue
            encoded = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocabulary[t] for t in self._bpe(encoded))
        return ids

    def detokenize(self, ids):
        decoder = {v: k for k, v in self._byte_encoder.items()}
        tokens = [self._decoder[i] for i in ids if i not in (self.start_token_id, self.end_token_id)]
        words = "".join(tokens).split("</w>")
        decoded = [bytearray(decoder[c] for c in word).decode("utf-8", "replace") for word in words]
        return " ".join(w for w in decoded if w)

    def __call__(self, prompts):
        """`(token_ids, padding_mask)`, both int32 `(len(prompts), sequence_length)`."""
        if isinstance(prompts, str):
            prompts = [prompts]
        n = self.sequence_length
        ids = np.full((len(prompts), n), self.pad_token_id, "int32")
        mask = np.zeros((len(prompts), n), "int32")
        for row, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"Prompts must be strings; got {type(prompt).__name__} {prompt!r}.")
            tokens = self.tokenize(prompt)
            if len(tokens) > n - 2:
                warnings.warn(
                    f"Prompt {prompt[:40]!r}... has {len(tokens)} tokens; keeping the "
                    f"first {n - 2} and the end token.",
                    stacklevel=2,
                )
                tokens = tokens[: n - 2]
            sequence = [self.start_token_id] + tokens + [self.end_token_id]
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        return ids, mask
