"""`python -m keras_sam3`: segment concepts in images from the command line.

    python -m keras_sam3 photo.jpg --prompt "red car" --prompt "person" \
        --preset sam3 --output-dir out/
    python -m keras_sam3 photo.jpg --box 40,60,200,220 --box 300,10,380,90:0 --preset ./my_preset
    python -m keras_sam3 photo.jpg --point 120,80 --point 40,30:0 --preset /path/to/hf_checkpoint

Each image is encoded once and every prompt runs against that encoding.
Clicks (`--point`, with at most one positive `--box`) segment one object with
the SAM 3 tracker and need a Hugging Face checkpoint (directory or hf://).
Writes, per image, `<name>_overlay.png` (masks, boxes, prompt and score)
and `<name>_instances.json` (images of the same file name from different
folders get `<name>-2`, `<name>-3`, ...). Images are read upright (their
EXIF orientation applied) and transparency is composited onto white, as
the reference processor does; boxes, points and results are in that
frame. The backend follows `KERAS_BACKEND`. On Linux the process keeps
large freed blocks for reuse (`tune_cpu_allocator`; `--default-allocator`
leaves malloc alone).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageOps

from keras_sam3.ops.masks import check_nms_threshold

PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128),
]


def _parse_prompt(text, count, form):
    coords, _, label = text.partition(":")
    try:
        values = [float(v) for v in coords.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{form}, numbers in pixels; got {text!r}")
    if label not in ("", "0", "1"):
        raise argparse.ArgumentTypeError(f"{form}: the label is 1 (positive) or 0 (negative); got {text!r}")
    return values, int(label) if label else 1


def parse_box(text):
    """`x1,y1,x2,y2` or `x1,y1,x2,y2:label` (label 1 positive, 0 negative)."""
    return _parse_prompt(text, 4, "a box is x1,y1,x2,y2[:label]")


def parse_point(text):
    """`x,y` or `x,y:label` (label 1 positive, 0 negative)."""
    return _parse_prompt(text, 2, "a point is x,y[:label]")


def parse_nms_threshold(text):
    """A mask IoU in [0, 1]."""
    try:
        value = float(text)
        check_nms_threshold(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the NMS threshold is a mask IoU in [0, 1]; got {text!r}") from None
    return value


def load_image(path):
    """An image file as an upright RGB PIL image: EXIF orientation applied,
    transparency composited onto white (`to_rgb_uint8`)."""
    from keras_sam3.models.image_converter import to_rgb_uint8

    with Image.open(path) as image:
        return Image.fromarray(to_rgb_uint8(ImageOps.exif_transpose(image)))


def output_stems(paths):
    """One output name per image path: its file name without the extension,
    with `-2`, `-3`, ... added where names repeat (so no result overwrites
    another)."""
    used, stems = set(), []
    for path in paths:
        base = os.path.splitext(os.path.basename(path))[0]
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def tracker_checkpoint(preset):
    """The Hugging Face checkpoint `preset` names, for clicks; None for a
    Keras preset, which holds the concept model only (no tracker)."""
    from keras_sam3.presets import resolve_preset_name

    source = resolve_preset_name(preset)
    if source.startswith("kaggle://") or os.path.isfile(os.path.join(source, "metadata.json")):
        return None
    return source


def segment_clicks(tracker, path, points, labels, box, log):
    """The tracker's best mask for the clicks (and box) on one image."""
    image = load_image(path)
    log(f"{path}: {image.width}x{image.height}, encoding")
    encoding = tracker.encode(np.asarray(image))
    result = tracker.segment_encoded(encoding, points=points or None, labels=labels or None, box=box)
    best = int(np.argmax(result["iou_scores"]))
    mask = result["masks"][best]
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)] if len(xs) else [0.0] * 4
    instance = {"prompt": "click", "score": float(result["iou_scores"][best]), "box": bbox, "query": best, "mask": mask}
    return image, [instance]


def mask_to_rle(mask):
    """Column-major run lengths of a bool mask, starting with a run of False (COCO style)."""
    flat = np.asarray(mask, bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[False], flat, [not flat[-1]]]).astype(np.int8)))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def draw_overlay(image, instances):
    """RGB image with translucent masks, boxes and `prompt score` labels."""
    base = np.asarray(image, dtype=np.float32).copy()
    for i, inst in enumerate(instances):
        color = np.array(PALETTE[i % len(PALETTE)], np.float32)
        base[inst["mask"]] = 0.5 * base[inst["mask"]] + 0.5 * color
    overlay = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(overlay)
    for i, inst in enumerate(instances):
        color = PALETTE[i % len(PALETTE)]
        x1, y1, x2, y2 = inst["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        draw.text((x1 + 3, max(y1 - 12, 0)), f"{inst['prompt']} {inst['score']:.2f}", fill=color)
    return overlay


def segment_image(segmenter, path, prompts, boxes, labels, threshold, log, nms_threshold=None):
    image = load_image(path)
    log(f"{path}: {image.width}x{image.height}, encoding")
    encoding = segmenter.encode(np.asarray(image))
    if prompts:
        queries = [(p, boxes, labels) for p in prompts]
    else:
        queries = [("visual", boxes, labels)]
    log(f"{path}: {len(queries)} prompt(s)")
    results = segmenter.segment_encoded(
        encoding,
        [q[0] for q in queries],
        [q[1] for q in queries] if boxes else None,
        [q[2] for q in queries] if boxes else None,
        threshold=threshold,
        nms_threshold=nms_threshold,
    )
    instances = []
    for (prompt, _, _), result in zip(queries, results):
        for score, box, mask, index in zip(result["scores"], result["boxes"], result["masks"], result["indices"]):
            instances.append(
                {"prompt": prompt, "score": float(score), "box": [float(v) for v in box], "query": int(index), "mask": mask}
            )
    return image, instances


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sam3",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image file(s)")
    parser.add_argument("--prompt", action="append", default=[], help="a concept (repeatable)")
    parser.add_argument("--box", action="append", default=[], type=parse_box, help="x1,y1,x2,y2[:label] pixels (repeatable)")
    parser.add_argument("--point", action="append", default=[], type=parse_point, help="x,y[:label] click (repeatable; uses the tracker)")
    parser.add_argument(
        "--preset",
        default="sam3",
        help="registered name, preset directory, HF checkpoint or hf:// id ('sam3' is hf://facebook/sam3: "
        "a download; 'sam3_shapes' is the small shipped model)",
    )
    parser.add_argument("--output-dir", default="sam3_out", help="where the overlays and JSON go")
    parser.add_argument("--threshold", type=float, default=0.5, help="keep instances scoring above this")
    parser.add_argument(
        "--nms-threshold",
        type=parse_nms_threshold,
        default=None,
        help="drop an instance whose mask overlaps a higher-scoring one of the same prompt with IoU "
        "above this (0-1; Meta's optional mask NMS); by default none is dropped, as in the reference",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's malloc as it is (by default large freed blocks are kept for reuse: "
        "keras_sam3.tune_cpu_allocator, docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    if not args.prompt and not args.box and not args.point:
        parser.error("give at least one --prompt, --box or --point")
    if args.point and (args.prompt or len(args.box) > 1):
        parser.error("clicks (--point) take at most one --box and no --prompt")
    if args.point and args.nms_threshold is not None:
        parser.error("--nms-threshold applies to concept prompts (--prompt, --box); clicks (--point) give one mask")
    if args.point and args.box and args.box[0][1] != 1:
        parser.error("clicks (--point) take one positive --box (x1,y1,x2,y2); the tracker has no negative boxes")
    if args.point:
        click_source = tracker_checkpoint(args.preset)
        if click_source is None:
            parser.error(
                f"clicks (--point) need a Hugging Face SAM 3 checkpoint with the tracker (a directory "
                f"or an hf:// id such as hf://facebook/sam3); {args.preset!r} is a Keras concept preset"
            )
    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:  # before minutes of loading a model
        parser.error(f"no such image file: {', '.join(missing)}")

    start = time.time()

    def log(message):
        print(f"[{time.time() - start:6.1f}s] {message}", flush=True)

    if not args.default_allocator:
        from keras_sam3.allocator import tune_cpu_allocator

        tune_cpu_allocator()
    log(f"loading {args.preset}")
    if args.point:
        from keras_sam3.models.visual_segmenter import SAM3PromptableVisualImageSegmenter

        segmenter = SAM3PromptableVisualImageSegmenter.from_checkpoint(click_source)
    else:
        from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter

        segmenter = SAM3PromptableConceptImageSegmenter.from_preset(args.preset)
    os.makedirs(args.output_dir, exist_ok=True)
    boxes = [b for b, _ in args.box]
    labels = [l for _, l in args.box]
    for path, stem in zip(args.images, output_stems(args.images)):
        if args.point:
            image, instances = segment_clicks(
                segmenter, path, [p for p, _ in args.point], [l for _, l in args.point],
                boxes[0] if boxes else None, log,
            )
        else:
            image, instances = segment_image(
                segmenter, path, args.prompt, boxes, labels, args.threshold, log, args.nms_threshold
            )
        overlay_path = os.path.join(args.output_dir, f"{stem}_overlay.png")
        draw_overlay(image, instances).save(overlay_path)
        record = {
            "image": path,
            "size": [image.height, image.width],
            "instances": [
                {**{k: v for k, v in inst.items() if k != "mask"}, "mask_rle": mask_to_rle(inst["mask"]),
                 "mask_area": int(inst["mask"].sum())}
                for inst in instances
            ],
        }
        json_path = os.path.join(args.output_dir, f"{stem}_instances.json")
        with open(json_path, "w") as f:
            json.dump(record, f)
        log(f"{path}: {len(instances)} instance(s) -> {overlay_path}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
