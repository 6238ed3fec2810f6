"""Trains the embedded `sam3_shapes` model from scratch on synthetic shapes.

A SAM 3-architecture model with every component (RoPE ViT + FPN neck, CLIP
text encoder, geometry encoder, DETR encoder / decoder with presence token,
dot-product scoring, mask decoder) at reduced widths and depths, trained
with `fit` and `SAM3Loss` (hard targets, negative prompts trained: the
settings training from scratch needs, docs/training.md) on
`keras_sam3.data.SyntheticShapesDataset`, then
saved as a Keras preset (weights + tokenizer vocabulary).

    KERAS_BACKEND=torch python tools/train_embedded.py --minutes 60 --max-steps 9000 --output presets/sam3_shapes

Within one run the loss changes in phases: absent concepts train the
queries from `--negatives-after` on, and `--late-positive-weight` takes
over at `--late-after` (one optimizer throughout). The shipped preset was
made in five stages (`--init-from` the previous one; runs from before the
decoder's queries started standard normal need `--uniform-query-init`);
their commands are in `presets/sam3_shapes.json` and `docs/training.md`,
their records in `presets/sam3_shapes/training_*.json`.

`--select-from K` starts K candidates (seeds `--seed` to `--seed + K - 1`),
trains each `--select-after` steps on the run's clock, and goes on with the
one whose top-ranked query best finds the prompted objects on a stream of
its own (`SELECTION_SEED`): the chosen run is, step for step, what its seed
alone gives; the others are dropped.

The learning-rate schedule spans `--max-steps`; the time budget may stop
training earlier (the step count is printed and saved in the preset's
`training.json`). `--stop-after N --minutes 1000` reproduces such a run
step for step on any machine. Evaluate with `tools/evaluate_embedded.py`.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

EVALUATION_SEEDS = {7, 2026}  # the validation and held-out streams (docs/training.md)
SELECTION_SEED = 11  # the stream `--select-from` measures its candidates on

from keras_sam3 import SAM3Backbone  # noqa: E402
from keras_sam3 import SAM3DetrDecoder  # noqa: E402
from keras_sam3 import SAM3DetrEncoder  # noqa: E402
from keras_sam3 import SAM3DotProductScoring  # noqa: E402
from keras_sam3 import SAM3GeometryEncoder  # noqa: E402
from keras_sam3 import SAM3ImageConverter  # noqa: E402
from keras_sam3 import SAM3MaskDecoder  # noqa: E402
from keras_sam3 import SAM3PromptableConceptImageSegmenter  # noqa: E402
from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor  # noqa: E402
from keras_sam3 import SAM3TextEncoder  # noqa: E402
from keras_sam3 import SAM3VisionEncoder  # noqa: E402
from keras_sam3.data.synthetic_shapes import SyntheticShapesDataset  # noqa: E402
from keras_sam3.data.synthetic_shapes import shapes_tokenizer  # noqa: E402
from keras_sam3.losses import SAM3Loss  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_embedded import top_query_iou  # noqa: E402

IMAGE_SIZE = 128
SEQUENCE_LENGTH = 16
NUM_QUERIES = 16


def embedded_backbone(
    vocabulary_size, query_initializer=None, width=64, detr_encoder_layers=2, text_layers=2, patch_size=8
):
    """The shipped architecture at the defaults; `width` (FPN, DETR, scoring
    and mask decoder), `detr_encoder_layers`, `text_layers` and `patch_size`
    (16: an 8 x 8 token grid and 32 x 32 masks instead of 16 x 16 and
    64 x 64) are knobs for experiments (docs/training.md)."""
    d = width
    # No dropout: an hour from scratch on endless fresh samples does not overfit.
    small = dict(hidden_dim=d, num_heads=4, intermediate_dim=4 * d, dropout_rate=0.0)
    return SAM3Backbone(
        vision_encoder=SAM3VisionEncoder(
            hidden_dim=128,
            intermediate_dim=512,
            num_layers=4,
            num_heads=4,
            patch_size=patch_size,
            pretrain_image_size=IMAGE_SIZE,
            window_size=8,
            global_attn_indexes=(1, 3),
            fpn_hidden_dim=d,
        ),
        text_encoder=SAM3TextEncoder(
            vocabulary_size=vocabulary_size,
            hidden_dim=64,
            intermediate_dim=256,
            num_layers=text_layers,
            num_heads=4,
            max_sequence_length=SEQUENCE_LENGTH,
            output_dim=d,
        ),
        geometry_encoder=SAM3GeometryEncoder(num_layers=1, **small),
        detr_encoder=SAM3DetrEncoder(num_layers=detr_encoder_layers, **small),
        detr_decoder=SAM3DetrDecoder(
            num_layers=3, num_queries=NUM_QUERIES, query_initializer=query_initializer, **small
        ),
        scoring=SAM3DotProductScoring(hidden_dim=d, intermediate_dim=4 * d, dropout_rate=0.0),
        mask_decoder=SAM3MaskDecoder(hidden_dim=d, num_heads=4),
        image_size=IMAGE_SIZE,
    )


def build_segmenter(query_initializer=None, **architecture):
    tokenizer = shapes_tokenizer(SEQUENCE_LENGTH)
    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(
        tokenizer, SAM3ImageConverter(IMAGE_SIZE)
    )
    backbone = embedded_backbone(tokenizer.vocabulary_size, query_initializer, **architecture)
    return SAM3PromptableConceptImageSegmenter(backbone=backbone, preprocessor=preprocessor)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after `minutes`; logs the loss every `every` steps.

    One instance spans every `fit` call of a run: steps and the deadline
    are counted over all of them.
    """

    def __init__(self, minutes, every=25, stop_after=None, save=None, save_every=0, deadline=None):
        super().__init__()
        self.stop_after = stop_after
        self.save = save
        self.save_every = save_every
        self.deadline = deadline or time.time() + 60 * minutes
        self.every = every
        self.steps = 0
        self.start = time.time()

    def done(self):
        return time.time() > self.deadline or bool(self.stop_after and self.steps >= self.stop_after)

    def on_train_begin(self, logs=None):
        # Keras logs the running mean since the epoch began: the mean of the
        # last `every` steps follows from two of them.
        self.fit_steps = 0
        self.logged_total = 0.0
        self.logged_at = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.fit_steps += 1
        if self.steps % self.every == 0:
            rate = (time.time() - self.start) / self.steps
            total = logs["loss"] * self.fit_steps
            recent = (total - self.logged_total) / max(self.fit_steps - self.logged_at, 1)
            self.logged_total, self.logged_at = total, self.fit_steps
            print(f"step {self.steps}: loss {recent:.3f} over the last steps ({rate:.2f} s/step)", flush=True)
        if self.save and self.save_every and self.steps % self.save_every == 0:
            self.model  # noqa: B018 (on JAX, reading it puts the step's weights back into the variables)
            self.save(self.steps)
        if self.done():
            self.model.stop_training = True


def save(segmenter, output, kept=None):
    """Saves the preset to `output` and, for `--keep-saves`, a copy to `kept`."""
    segmenter.save_to_preset(output)
    if kept:
        shutil.copytree(output, kept)


def phases(args):
    """`[(first_step, SAM3Loss keyword arguments)]`: the loss changes at
    `--negatives-after` (absent concepts start training the queries and the
    semantic mask) and `--late-after` (the late positive weight)."""
    base = dict(
        pad_num_queries=NUM_QUERIES,
        soft_targets=args.soft_targets,
        negative_prompts=False,
        positive_weight=args.positive_weight,
        cost_mask=args.cost_mask,
        cost_dice=args.cost_dice,
        bbox_weight=args.bbox_weight,
        giou_weight=args.giou_weight,
        presence_weight=args.presence_weight,
        o2m_weight=args.o2m_weight,
        o2m_topk=args.o2m_topk,
    )
    changes = {0: {}}
    if not args.meta_negatives:
        if args.negatives_ramp:
            # Weights 1/4, 2/4, 3/4 and 1 over four equal parts of the ramp.
            for k in range(4):
                first = args.negatives_after + (k * args.negatives_ramp) // 4
                changes.setdefault(first, {})["negative_prompts"] = (k + 1) / 4
        else:
            changes.setdefault(args.negatives_after, {})["negative_prompts"] = True
    if args.late_positive_weight is not None:
        changes.setdefault(args.late_after, {})["positive_weight"] = args.late_positive_weight
    result, current = [], dict(base)
    for step in sorted(changes):
        current = dict(current, **changes[step])
        result.append((step, dict(current)))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="presets/sam3_shapes")
    parser.add_argument("--minutes", type=float, default=55.0)
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument(
        "--stop-after",
        type=int,
        help="stop after this many steps (the schedule still spans --max-steps): reproduces a run the time budget cut",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--select-from",
        type=int,
        default=1,
        help="train this many candidates, seeds --seed, --seed + 1, ..., for --select-after steps each (on the "
        "run's clock), then go on with the one whose top-ranked query best finds the prompted objects "
        "(tools/evaluate_embedded.py's top_query_iou): how well a run starts decides its hour (docs/training.md)",
    )
    parser.add_argument("--select-after", type=int, default=1000, help="steps each --select-from candidate trains")
    parser.add_argument(
        "--select-samples", type=int, default=128, help="prompts (all naming present concepts) each candidate is measured on"
    )
    parser.add_argument("--init-from", help="a preset whose weights to start from (a second stage)")
    parser.add_argument("--data-offset", type=int, default=0, help="first batch index of the data stream")
    parser.add_argument(
        "--soft-targets",
        action="store_true",
        help="Meta's IoU-aware classification targets (SAM3Loss' default); without it every matched query's "
        "target is 1 (soft_targets=False), which a model trained from scratch needs (docs/training.md)",
    )
    parser.add_argument(
        "--positive-weight",
        type=float,
        default=10.0,
        help="SAM3Loss' weight of matched queries in the classification loss (Meta's 10)",
    )
    parser.add_argument(
        "--meta-negatives",
        action="store_true",
        help="leave prompts without ground truth to the presence head alone for the whole run, as Meta does "
        "(SAM3Loss' default); without it their queries and semantic mask are trained to be empty too "
        "(negative_prompts=True) from --negatives-after on",
    )
    parser.add_argument(
        "--negatives-after",
        type=int,
        default=2000,
        help="first step with negative_prompts=True: from scratch, query scores only separate without them "
        "(docs/training.md)",
    )
    parser.add_argument(
        "--negatives-ramp",
        type=int,
        default=0,
        help="bring absent concepts in over this many steps from --negatives-after: their weight in the "
        "query and semantic terms is 1/4, 2/4, 3/4, then 1 over four equal parts (0: full weight at once; "
        "docs/training.md)",
    )
    parser.add_argument("--late-positive-weight", type=float, help="positive weight from --late-after on")
    parser.add_argument("--late-after", type=int, default=0)
    parser.add_argument(
        "--reference-boxes",
        choices=("grid", "learned"),
        default="learned",
        help="learned: the decoder's reference boxes start at random and train (SAM 3's way); grid: they "
        "start on a fixed grid and stay there (SAM3DetrDecoder.set_grid_reference_boxes; no better after "
        "1,500 steps, docs/training.md)",
    )
    parser.add_argument(
        "--uniform-query-init",
        action="store_true",
        help="Keras' uniform(-0.05, 0.05) for the decoder's queries, reference boxes and presence token "
        "(what the decoder used before it took nn.Embedding's standard normal): reproduces runs made then",
    )
    parser.add_argument("--cost-mask", type=float, default=0.0, help="SAM3Loss' mask BCE matching cost")
    parser.add_argument("--cost-dice", type=float, default=0.0, help="SAM3Loss' mask dice matching cost")
    parser.add_argument("--bbox-weight", type=float, default=5.0, help="SAM3Loss' L1 box loss weight (Meta's 5)")
    parser.add_argument("--giou-weight", type=float, default=2.0, help="SAM3Loss' GIoU loss weight (Meta's 2)")
    parser.add_argument(
        "--presence-weight", type=float, default=20.0, help="SAM3Loss' presence BCE weight (Meta's 20)"
    )
    parser.add_argument(
        "--o2m-weight",
        type=float,
        default=0.0,
        help="SAM3Loss' weight of Meta's one-to-many (DAC) query branch (0: off, as the shipped runs; "
        "Meta's configurations: 2)",
    )
    parser.add_argument(
        "--o2m-topk", type=int, default=4, help="SAM3Loss' one-to-many picks per ground truth (Meta's 4)"
    )
    parser.add_argument(
        "--negative-rate", type=float, default=0.25, help="share of training prompts naming absent concepts (held-out sets: 0.25)"
    )
    parser.add_argument(
        "--hard-negative-rate",
        type=float,
        default=0.0,
        help="share of those negatives one attribute away from a present object (ShapesGenerator's hard_negative_rate)",
    )
    parser.add_argument(
        "--distractor-rate",
        type=float,
        default=0.0,
        help="chance that a scene's further shape repeats an earlier one's shape in another colour or size "
        "(ShapesGenerator's distractor_rate)",
    )
    parser.add_argument(
        "--color-prompt-rate",
        type=float,
        default=0.0,
        help="share of training prompts naming a colour alone, \"red\" (ShapesGenerator's color_prompt_rate): "
        "without them the fusion learned to answer from shape and size only (docs/training.md)",
    )
    parser.add_argument(
        "--prompts-per-image",
        type=int,
        default=1,
        help="prompts drawn on each training scene, consecutive in a batch (SyntheticShapesDataset's "
        "prompts_per_image; must divide --batch-size): the same pixels answered differently by the text",
    )
    parser.add_argument("--save-every", type=int, default=500, help="save the preset every N steps")
    parser.add_argument(
        "--keep-saves",
        action="store_true",
        help="also keep each periodic save as its own preset, OUTPUT-stepN beside OUTPUT (which every save "
        "overwrites): evaluate a run's checkpoints while it trains or after",
    )
    parser.add_argument("--width", type=int, default=64, help="FPN, DETR, scoring and mask decoder width (shipped: 64)")
    parser.add_argument("--detr-encoder-layers", type=int, default=2, help="DETR encoder depth (shipped: 2)")
    parser.add_argument("--text-layers", type=int, default=2, help="text encoder depth (shipped: 2)")
    parser.add_argument(
        "--patch-size",
        type=int,
        default=8,
        choices=(8, 16),
        help="vision encoder patch size (shipped: 8; 16 quarters the tokens and halves the mask resolution)",
    )
    args = parser.parse_args()
    if args.max_steps < 1 or (args.stop_after is not None and args.stop_after < 1):
        parser.error("--max-steps and --stop-after must be at least 1")
    if args.negatives_ramp < 0 or (args.negatives_ramp and args.meta_negatives):
        parser.error("--negatives-ramp must be at least 0, and brings in what --meta-negatives leaves out")
    if args.prompts_per_image < 1 or args.batch_size % args.prompts_per_image:
        parser.error("--prompts-per-image must be at least 1 and divide --batch-size")
    if args.select_from < 1 or args.select_samples < 1:
        parser.error("--select-from and --select-samples must be at least 1")
    if args.select_from > 1 and not 0 < args.select_after < min(args.max_steps, args.stop_after or args.max_steps):
        parser.error("--select-after must lie between 0 and the run's last step, exclusive")
    candidate_seeds = [args.seed + i for i in range(args.select_from)]
    refused = EVALUATION_SEEDS | ({SELECTION_SEED} if args.select_from > 1 else set())
    for seed in candidate_seeds:
        if seed in refused:
            # Batch 0 of SyntheticShapesDataset(seed=s) is ShapesGenerator(seed=s)'s
            # first samples (numpy seeds (s, 0) as s).
            parser.error(
                f"--seed {seed} would train on the first samples of an evaluation stream "
                f"(tools/evaluate_embedded.py draws seeds {sorted(EVALUATION_SEEDS)}, --select-from {SELECTION_SEED}); "
                "pick another seed"
            )

    kept = {}  # step -> directory of its kept save
    if args.keep_saves and args.save_every > 0:
        last = min(args.max_steps, args.stop_after or args.max_steps)
        # With --select-from the run's saves start once a candidate is chosen.
        first = args.select_after if args.select_from > 1 else args.save_every
        first = -(-first // args.save_every) * args.save_every
        kept = {step: f"{args.output.rstrip(os.sep)}-step{step}" for step in range(first, last + 1, args.save_every)}
        taken = [path for path in kept.values() if os.path.exists(path)]
        if taken:
            parser.error(f"--keep-saves would overwrite {taken[0]}: move it away or pick another --output")

    def build(seed):
        """A fresh segmenter and optimizer drawn from `seed` (a run's weights
        depend on nothing else)."""
        keras.utils.set_random_seed(seed)
        segmenter = build_segmenter(
            "uniform" if args.uniform_query_init else None,
            width=args.width,
            detr_encoder_layers=args.detr_encoder_layers,
            text_layers=args.text_layers,
            patch_size=args.patch_size,
        )
        if args.init_from:
            segmenter.backbone.load_weights(os.path.join(args.init_from, "model.weights.h5"))
        if args.reference_boxes == "grid":
            decoder = segmenter.backbone.detr_decoder
            if args.init_from:
                decoder.reference_points.trainable = False  # keep the loaded grid
            else:
                decoder.set_grid_reference_boxes(box_size=0.2)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=args.max_steps,
            warmup_target=args.learning_rate,
            warmup_steps=args.warmup_steps,
            alpha=0.05,
        )
        # The schedule's horizon is the step budget the time allows: estimated
        # from a short first run would make training non-reproducible, so the
        # cosine runs over `--max-steps` and the time budget cuts it.
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.05, global_clipnorm=1.0)
        return segmenter, optimizer

    plan = phases(args)
    losses = []
    ran = []  # the phases that trained at least a step

    def train(segmenter, optimizer, seed, first_step, stop, budget):
        """Trains `segmenter` from step `first_step` up to `stop` (or until
        `budget` says so) along `plan`, on the data stream of `seed`."""
        for i, (first, loss_kwargs) in enumerate(plan):
            last = min(plan[i + 1][0], stop) if i + 1 < len(plan) else stop
            first = max(first, first_step)
            if budget.done() or first >= last:
                continue
            print(f"steps {first}-{last} (optimizer at {int(optimizer.iterations)}): SAM3Loss({loss_kwargs})", flush=True)
            # The same optimizer across phases: its state and step count go on.
            segmenter.compile(optimizer=optimizer, loss=SAM3Loss(**loss_kwargs))
            data = SyntheticShapesDataset(
                segmenter.preprocessor,
                batch_size=args.batch_size,
                steps=last - first,
                seed=seed,
                image_size=IMAGE_SIZE,
                offset=args.data_offset + first,
                negative_rate=args.negative_rate,
                hard_negative_rate=args.hard_negative_rate,
                distractor_rate=args.distractor_rate,
                color_prompt_rate=args.color_prompt_rate,
                prompts_per_image=args.prompts_per_image,
            )
            # In order: batch `offset + k` is step `k`, so a cut run has used the
            # first batches of its range and `--data-offset` resumes after them
            # (Keras shuffles a PyDataset's batches by default).
            history = segmenter.fit(data, epochs=1, verbose=0, callbacks=[budget], shuffle=False)
            losses.append(float(history.history["loss"][-1]))
            if not ran or ran[-1][1] != loss_kwargs:
                ran.append((first, loss_kwargs))

    start = time.time()
    budget = TimeBudget(args.minutes, stop_after=args.stop_after, save_every=args.save_every)
    selection = None
    if args.select_from > 1:
        # Candidates train `--select-after` steps each, on the run's clock;
        # the one whose top query best finds the prompted objects goes on
        # (docs/training.md). Each is the run its own `--seed` would make.
        selection = {"after": args.select_after, "samples": args.select_samples, "candidates": []}
        best = None
        for seed in candidate_seeds:
            segmenter, optimizer = build(seed)
            trial = TimeBudget(args.minutes, deadline=budget.deadline)
            ran.clear()
            train(segmenter, optimizer, seed, 0, args.select_after, trial)
            if trial.steps < args.select_after:
                sys.exit(f"--minutes ran out while candidate seed {seed} trained ({trial.steps} of {args.select_after} steps)")
            measured = top_query_iou(segmenter, args.select_samples, SELECTION_SEED)
            print(f"candidate seed {seed}: top-query IoU {measured:.4f} at step {args.select_after}", flush=True)
            selection["candidates"].append({"seed": seed, "top_query_iou": round(measured, 4)})
            if best is None or measured > best[0]:
                best = (measured, seed, segmenter, optimizer, list(ran))
        _, seed, segmenter, optimizer, chosen_ran = best
        ran[:] = chosen_ran
        selection["chosen_seed"] = seed
        print(f"going on with seed {seed}", flush=True)
        budget.steps = args.select_after
    else:
        seed = args.seed
        segmenter, optimizer = build(seed)
    print(f"backend {keras.backend.backend()}, {segmenter.backbone.count_params():,} parameters", flush=True)
    budget.save = lambda step: save(segmenter, args.output, kept.get(step))
    if selection and args.save_every and args.select_after % args.save_every == 0:
        budget.save(args.select_after)
    train(segmenter, optimizer, seed, budget.steps, args.max_steps, budget)
    elapsed = time.time() - start
    segmenter.save_to_preset(args.output)
    summary = {
        "backend": keras.backend.backend(),
        "steps": budget.steps,
        "batch_size": args.batch_size,
        "minutes": round(elapsed / 60, 1),
        "final_loss": losses[-1] if losses else float("nan"),
        "parameters": int(segmenter.backbone.count_params()),
        "learning_rate": args.learning_rate,
        "max_steps": args.max_steps,
        "warmup_steps": args.warmup_steps,
        "seed": seed,
        "selection": selection,
        "init_from": args.init_from,
        "data_offset": args.data_offset,
        "soft_targets": args.soft_targets,
        "negative_rate": args.negative_rate,
        "hard_negative_rate": args.hard_negative_rate,
        "distractor_rate": args.distractor_rate,
        "color_prompt_rate": args.color_prompt_rate,
        "prompts_per_image": args.prompts_per_image,
        "negatives_ramp": args.negatives_ramp,
        "phases": [{"first_step": first, **{k: v for k, v in kw.items() if k != "pad_num_queries"}} for first, kw in ran],
        "reference_boxes": args.reference_boxes,
        "architecture": {"width": args.width, "detr_encoder_layers": args.detr_encoder_layers, "text_layers": args.text_layers, "patch_size": args.patch_size},
    }
    with open(os.path.join(args.output, "training.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    print(f"saved {args.output}: {sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(args.output) for n in ns) / 2**20:.1f} MiB")
    assert math.isfinite(summary["final_loss"])


if __name__ == "__main__":
    main()
