"""Evaluates a concept segmenter on a held-out synthetic-shapes set.

Prints (and optionally writes) cgF1, pmF1, IL_MCC (Meta's SA-Co
definitions, `keras_sam3.metrics`) and the mask mIoU of matched instances,
with predictions from `segment()` (score = sigmoid(logit) * sigmoid(presence),
kept at >= 0.5 by the evaluator; masks binarized at 0.5 at the original size).

    python tools/evaluate_embedded.py --preset sam3_shapes --samples 500

The held-out scenes come from `--seed` (default 2026), a stream the
training data (seeds `(0, i)`) never draws from. Seed `s` here equals batch
0 of the training stream of seed `s` (numpy seeds `(s, 0)` as `s`), so
seed 0 is refused, and `tools/train_embedded.py` refuses 7 and 2026.

`absent_concepts` counts the prompts without ground truth that got an
instance anyway, by what separates them from the closest object in the
scene: `color` ("blue triangle" beside a red triangle), `size`, `shape`
(ties between objects go in that order), or `more` (two attributes or
more).

`score_parts` splits the score into its two factors, for prompts with
objects (`present`) and without (`absent`): the quartiles of the presence
probability `sigmoid(presence)`, of the best query's `sigmoid(logit)` and
of the best score (their product). A model that has not learned presence
yet has the same quartiles in both rows (docs/training.md).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from keras_sam3 import SAM3PromptableConceptImageSegmenter  # noqa: E402
from keras_sam3.data.synthetic_shapes import ShapesGenerator  # noqa: E402
from keras_sam3.metrics import ConceptSegmentationEvaluator  # noqa: E402
from keras_sam3.metrics import mask_iou  # noqa: E402
from keras_sam3.ops.masks import _sigmoid  # noqa: E402  (the post-processing's own)
from keras_sam3.ops.masks import post_process_instances  # noqa: E402
from keras_sam3.ops.masks import resize_bilinear  # noqa: E402


def nearest_difference(concept, objects):
    """What separates an absent concept (a sample's `concept`) from the
    closest object in the scene: "color", "size" or "shape" (ties in that
    order), or "more" than one attribute."""
    differences = [[k for k, v in concept.items() if obj[k] != v] for obj in objects]
    singles = {d[0] for d in differences if len(d) == 1}
    return next((kind for kind in ("color", "size", "shape") if kind in singles), "more")


def evaluate(segmenter, samples=500, seed=2026, batch_size=16):
    size = segmenter.backbone.image_size
    generator = ShapesGenerator(image_size=size, seed=seed)
    evaluator = ConceptSegmentationEvaluator()
    # kind -> [answered, prompts]
    absent = {kind: [0, 0] for kind in ("color", "shape", "size", "more")}
    # present / absent -> rows of (presence, best query, best score)
    parts = {"present": [], "absent": []}
    for batch, outputs, sizes in _predicted(segmenter, generator, samples, batch_size):
        # Meta's post-processing keeps scores > 0.3; the evaluator gates at >= 0.5.
        results = post_process_instances(outputs, sizes, threshold=0.3)
        presence = _sigmoid(np.asarray(outputs["presence_logits"], "float64")[:, 0])
        queries = _sigmoid(np.asarray(outputs["pred_logits"], "float64"))
        for i, (sample, result) in enumerate(zip(batch, results)):
            parts["present" if len(sample["masks"]) else "absent"].append(
                (presence[i], queries[i].max(), (queries[i] * presence[i]).max())
            )
            evaluator.update(result["scores"], result["masks"], sample["masks"])
            if not len(sample["masks"]):
                counts = absent[nearest_difference(sample["concept"], sample["objects"])]
                counts[0] += int((result["scores"] >= 0.5).any())
                counts[1] += 1
    figures = evaluator.result()
    figures["absent_concepts"] = {kind: {"answered": a, "prompts": n} for kind, (a, n) in absent.items()}
    figures["score_parts"] = {kind: _quartiles(rows) for kind, rows in parts.items()}
    return figures


def top_query_iou(segmenter, samples=64, seed=11, batch_size=16):
    """Whether the queries have picked their objects, whatever their scores'
    scale: over `samples` prompts that all name present concepts
    (`ShapesGenerator(negative_rate=0)` from `seed`), the mean IoU of the
    top-ranked query's mask (by its logit; presence left out) with the
    prompted object it overlaps most. Queries that have not localized give
    a low value; queries whose scores all fell together (the collapse
    absent concepts can bring) still rank, and score high here
    (docs/training.md). `tools/train_embedded.py --select-from` reads it."""
    size = segmenter.backbone.image_size
    generator = ShapesGenerator(image_size=size, negative_rate=0.0, seed=seed)
    ious = []
    for batch, outputs, sizes in _predicted(segmenter, generator, samples, batch_size):
        tops = np.argmax(np.asarray(outputs["pred_logits"]), axis=-1)
        for i, sample in enumerate(batch):
            # The top query's mask as `segment()` gives masks: at the image's size, at 0.5.
            mask = resize_bilinear(_sigmoid(np.asarray(outputs["pred_masks"][i])[tops[i : i + 1]]), sizes[i]) > 0.5
            ious.append(float(mask_iou(mask, np.asarray(sample["masks"], bool)).max()))
    return float(np.mean(ious))


def _predicted(segmenter, generator, samples, batch_size):
    """`(samples, raw backbone outputs, original sizes)` per batch of
    `samples` drawn from `generator`: what `segment()` runs, before its
    post-processing."""
    done = 0
    while done < samples:
        batch = [generator.sample() for _ in range(min(batch_size, samples - done))]
        inputs, sizes = segmenter._preprocess([s["image"] for s in batch], [s["prompt"] for s in batch], None, None)
        yield batch, segmenter.backbone.predict_on_batch(inputs), sizes
        done += len(batch)


def _quartiles(rows):
    """Quartiles of each factor of the score over some prompts."""
    summary = {"prompts": len(rows)}
    columns = np.asarray(rows, "float64").reshape(len(rows), 3).T
    for name, values in zip(("presence", "best_query", "best_score"), columns):
        summary[name] = [round(float(q), 4) for q in np.percentile(values, (25, 50, 75))] if len(rows) else None
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sam3_shapes")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", help="write the figures to this JSON file")
    args = parser.parse_args()
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    if args.seed == 0:
        # ShapesGenerator(seed=0) draws what SyntheticShapesDataset(seed=0)'s
        # batch 0 holds (numpy seeds (0, 0) as 0): training data.
        parser.error("--seed 0 is the training stream's first batch (tools/train_embedded.py's default seed)")
    import keras

    start = time.time()
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset(args.preset)
    result = evaluate(segmenter, args.samples, args.seed)
    result.update(preset=args.preset, samples=args.samples, seed=args.seed, backend=keras.backend.backend())
    result["seconds"] = round(time.time() - start, 1)
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
