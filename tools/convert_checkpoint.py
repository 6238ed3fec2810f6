"""Converts a Hugging Face SAM 3 checkpoint into a Keras preset directory.

    python tools/convert_checkpoint.py hf://facebook/sam3 presets/sam3 --verify
    python tools/convert_checkpoint.py /path/to/local/checkpoint out/sam3_tiny

The source is a local directory (config.json + safetensors) or an `hf://`
id (downloaded; needs network). Both the full `facebook/sam3` layout and a
plain `Sam3Model` directory work. The output loads with
`SAM3Backbone.from_preset(output)`. `--verify` runs the reference
`transformers` model on random inputs and fails on a parity violation.
"""

import argparse
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="local checkpoint directory or hf://owner/name")
    parser.add_argument("output", help="Keras preset directory to write")
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: the config's)")
    parser.add_argument(
        "--reference-text-only",
        action="store_true",
        help="text-only prompts as the transformers reference (no geometry CLS token) "
        "instead of Meta's model",
    )
    parser.add_argument("--dtype", help="dtype policy, e.g. float32 or bfloat16")
    parser.add_argument("--revision", help="revision of an hf:// source")
    parser.add_argument("--verify", action="store_true", help="check parity against transformers")
    args = parser.parse_args(argv)

    from keras_sam3.convert.hf_checkpoint import HFCheckpoint
    from keras_sam3.convert.hf_to_keras import build_backbone
    from keras_sam3.convert.hf_to_keras import load_backbone_weights
    from keras_sam3.convert.sources import resolve_checkpoint

    def step(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    step(f"resolving {args.source}")
    directory = resolve_checkpoint(args.source, revision=args.revision)
    step(f"reading {directory}")
    checkpoint = HFCheckpoint(directory)
    total = len(checkpoint.tensors) + len(checkpoint.other_tensors)
    step(f"{total} tensors in the checkpoint; building the model")
    backbone = build_backbone(
        checkpoint,
        image_size=args.image_size,
        cls_without_boxes=not args.reference_text_only,
        dtype=args.dtype,
    )
    report = load_backbone_weights(backbone, checkpoint, progress=lambda name: step(f"loading {name}"))
    step(f"saving the preset to {args.output}")
    backbone.save_to_preset(args.output)
    from keras_sam3.models.tokenizer import SAM3Tokenizer
    from keras_sam3.presets import TOKENIZER_ASSETS

    tokenizer = SAM3Tokenizer.find_in_directory(directory)
    if tokenizer is not None:
        tokenizer.save_assets(os.path.join(args.output, TOKENIZER_ASSETS))
        step("saved the tokenizer's vocabulary with it")
    else:
        step("no vocab.json / merges.txt / tokenizer.json in the checkpoint: the preset has no tokenizer")
    print(report.summary())
    print(f"parameters: {backbone.count_params():,}")
    if args.verify:
        # After saving: a verification that cannot run (no torchvision for
        # the reference's box path) or fails leaves the conversion on disk.
        from keras_sam3.convert.verify import verify_backbone

        step("verifying against transformers")
        for name, (error, bound) in verify_backbone(backbone, directory).items():
            step(f"  {name}: max|diff| {error:.2e} (bound {bound:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
