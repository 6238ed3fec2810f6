"""Where a Hugging Face checkpoint comes from: a local directory or `hf://`."""

import os

HF_SCHEME = "hf://"
# Configs, tokenizer files (vocab.json / tokenizer.json and merges.txt) and
# safetensors weights.
WEIGHT_PATTERN = "*.safetensors"
ALLOW_PATTERNS = ("*.json", WEIGHT_PATTERN, "merges.txt")


def resolve_checkpoint(source, revision=None, weights=True):
    """Local directory of a Hugging Face SAM 3 checkpoint.

    Args:
        source: a local directory, or `hf://owner/name` (downloaded with
            `huggingface_hub`; only the JSON files, the `*.safetensors`
            weights and the tokenizer's `merges.txt`, never pickled weights).
        revision: optional branch, tag or commit for `hf://` sources.
        weights: bool. False downloads only the configuration and tokenizer
            files of an `hf://` source.
    """
    if source.startswith(HF_SCHEME):
        try:
            import huggingface_hub
        except ImportError as e:
            raise ImportError(
                f"Loading {source} needs `huggingface_hub` (pip install huggingface_hub)."
            ) from e
        repo_id = source[len(HF_SCHEME) :].strip("/")
        patterns = [p for p in ALLOW_PATTERNS if weights or p != WEIGHT_PATTERN]
        return huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"{source!r} is neither a directory nor an hf:// id.")
    return source
