"""A procedural concept-segmentation dataset: coloured shapes and noun phrases.

Each scene is a noisy background with one to `max_objects` shapes (circle,
square, triangle), each with a colour and a size class. Shapes are placed
apart by their radius; a square's corners reach past it, so now and then
(about 2 scenes in 1,000) a later shape covers a few pixels of an earlier
one, and those pixels leave the earlier one's mask and box: masks hold what
is visible.
Each sample pairs a scene with one prompt ("circle", "red square",
"large blue triangle", ...) and *all* instances that match it; a share of
prompts name concepts absent from the scene (negatives, no instances).

Targets follow `SAM3PromptableConceptImageSegmenter`'s training format:
`boxes` `(G, 4)` normalized xyxy, `masks` `(G, S, S)` 0 / 1 and `valid`
`(G,)` 1 for real instances, padded to `max_objects`.

Example:
>>> scenes = ShapesGenerator(image_size=128, seed=0)
>>> sample = scenes.sample()
>>> sample["prompt"], sample["boxes"].shape
('small triangle', (1, 4))
"""

import keras
import numpy as np

from keras_sam3.models.tokenizer import SAM3Tokenizer
from keras_sam3.models.tokenizer import vocabulary_from_merges

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (0.06, 0.085), "large": (0.12, 0.16)}  # radius as a fraction of the side
WORDS = tuple(COLORS) + SHAPES + tuple(SIZES) + ("visual",)
# The attribute sets a prompt names: "circle", "red circle", "large circle", "large red circle".
CONCEPT_KEYS = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))


def shapes_tokenizer(sequence_length=32):
    """A CLIP-style BPE tokenizer whose merges spell this dataset's words.

    Each word's letters merge left to right into one token where the merge
    order allows it; any text still tokenizes (byte-level fallback).
    """
    merges = []
    seen = set()
    for word in sorted(WORDS, key=len, reverse=True):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            if (current, symbol) not in seen:
                seen.add((current, symbol))
                merges.append((current, symbol))
            current = current + symbol
    return SAM3Tokenizer(vocabulary_from_merges(merges), merges, sequence_length)


def _shape_mask(shape, cx, cy, r, size):
    y, x = np.mgrid[0:size, 0:size].astype("float32") + 0.5
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    if shape == "square":
        half = r * 0.85
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    # An upward triangle inscribed in the circle of radius r.
    top, bottom = cy - r, cy + 0.5 * r
    half_width = (y - top) / (bottom - top) * r * 0.866
    return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half_width)


def matches(obj, concept):
    return all(obj[k] == v for k, v in concept.items())


def phrase(concept):
    return " ".join(concept[k] for k in ("size", "color", "shape") if k in concept)


class ShapesGenerator:
    """Scenes and prompts from a seeded random stream.

    Args:
        image_size: int. Square image side. Defaults to `128`.
        max_objects: int. Most shapes per scene (and ground truths per
            prompt). Defaults to `4`.
        negative_rate: float. Share of prompts naming an absent concept.
            Defaults to `0.25`.
        hard_negative_rate: float. Share of those negatives made from a
            present object with one attribute changed ("purple triangle"
            beside a red triangle), the confusions a concept model must
            learn to refuse; the rest name random absent concepts. A
            training option: at `0` (the default) the stream is the one
            held-out sets are drawn from. Defaults to `0.0`.
        distractor_rate: float. Chance that each shape after a scene's
            first is a distractor of an earlier one: the same shape in
            another colour, or in the same colour at the other size, so
            that a prompt naming one must refuse the other in the same
            image. A training option like `hard_negative_rate` (`0`, the
            default, leaves the held-out stream unchanged). Defaults to
            `0.0`.
        color_prompt_rate: float. Share of prompts that name a colour alone
            ("red": every red object, or none if the scene has no red), so
            that the text-image fusion cannot answer from shape and size
            only. A training option (`0`, the default, leaves the held-out
            stream unchanged). Defaults to `0.0`.
        seed: int. Defaults to `0`.
    """

    def __init__(
        self,
        image_size=128,
        max_objects=4,
        negative_rate=0.25,
        hard_negative_rate=0.0,
        distractor_rate=0.0,
        color_prompt_rate=0.0,
        seed=0,
    ):
        rates = {
            "negative_rate": negative_rate,
            "hard_negative_rate": hard_negative_rate,
            "distractor_rate": distractor_rate,
            "color_prompt_rate": color_prompt_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1]; got {rate}.")
        self.image_size = image_size
        self.max_objects = max_objects
        self.negative_rate = negative_rate
        self.hard_negative_rate = hard_negative_rate
        self.distractor_rate = distractor_rate
        self.color_prompt_rate = color_prompt_rate
        self.rng = np.random.default_rng(seed)

    def scene(self):
        """`(image uint8 (S, S, 3), objects)`; objects carry their mask."""
        rng, size = self.rng, self.image_size
        base = rng.uniform(0, 90, 3)
        image = base + rng.normal(0, 8, (size, size, 3))
        objects = []
        count = rng.integers(1, self.max_objects + 1)
        for _ in range(50 * count):
            if len(objects) == count:
                break
            # Drawn only when enabled, so the default stream stays as it was.
            twin = None
            if self.distractor_rate and objects and rng.uniform() < self.distractor_rate:
                twin = self._distractor(objects[rng.integers(len(objects))])
            size_name = twin["size"] if twin else str(rng.choice(list(SIZES)))
            r = rng.uniform(*SIZES[size_name]) * size
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if any((cx - o["cx"]) ** 2 + (cy - o["cy"]) ** 2 < (r + o["r"] + 2) ** 2 for o in objects):
                continue
            shape = twin["shape"] if twin else str(rng.choice(SHAPES))
            color = twin["color"] if twin else str(rng.choice(list(COLORS)))
            mask = _shape_mask(shape, cx, cy, r, size)
            if not mask.any():  # a small triangle on a tiny image can miss every pixel center
                continue
            objects.append(dict(shape=shape, color=color, size=size_name, cx=cx, cy=cy, r=r, mask=mask))
        for obj in objects:
            shade = np.asarray(COLORS[obj["color"]]) + rng.normal(0, 10, 3)
            image[obj["mask"]] = shade + rng.normal(0, 6, (int(obj["mask"].sum()), 3))
        # Then what a later shape painted over leaves the earlier masks (after
        # the painting, whose noise draws follow the drawn shapes' pixel counts:
        # the random stream stays as it was).
        for i, obj in enumerate(objects):
            for later in objects[i + 1 :]:
                obj["mask"] = obj["mask"] & ~later["mask"]
        return np.clip(image, 0, 255).astype("uint8"), objects

    def _distractor(self, obj):
        """Attributes one step from `obj`: its shape in another colour (two
        times in three), or its shape and colour at the other size."""
        rng = self.rng
        if rng.uniform() < 2 / 3:
            color = str(rng.choice([c for c in COLORS if c != obj["color"]]))
            return {"shape": obj["shape"], "color": color, "size": str(rng.choice(list(SIZES)))}
        size = next(s for s in SIZES if s != obj["size"])
        return {"shape": obj["shape"], "color": obj["color"], "size": size}

    def concept(self, objects):
        """A prompt concept: of a present object, or (sometimes) an absent one."""
        rng = self.rng
        keys = CONCEPT_KEYS
        # Drawn only when enabled, so the default stream stays as it was.
        if self.color_prompt_rate and rng.uniform() < self.color_prompt_rate:
            keys = (("color",),)
        if rng.uniform() < self.negative_rate:
            # Drawn only when enabled, so the default stream stays as it was.
            if self.hard_negative_rate and len(keys) > 1 and rng.uniform() < self.hard_negative_rate:
                concept = self._near_miss(objects)
                if concept is not None:
                    return concept
            for _ in range(100):
                concept = {
                    "shape": str(rng.choice(SHAPES)),
                    "color": str(rng.choice(list(COLORS))),
                    "size": str(rng.choice(list(SIZES))),
                }
                concept = {k: concept[k] for k in keys[rng.integers(len(keys))]}
                if not any(matches(o, concept) for o in objects):
                    return concept
        obj = objects[rng.integers(len(objects))]
        return {k: obj[k] for k in keys[rng.integers(len(keys))]}

    def _near_miss(self, objects):
        """An absent concept one attribute away from a present object."""
        rng = self.rng
        values = {"shape": SHAPES, "color": tuple(COLORS), "size": tuple(SIZES)}
        keys = CONCEPT_KEYS[1:]  # two attributes or more: one can change
        for _ in range(20):
            obj = objects[rng.integers(len(objects))]
            concept = {k: obj[k] for k in keys[rng.integers(len(keys))]}
            key = str(rng.choice(list(concept)))
            concept[key] = str(rng.choice([v for v in values[key] if v != concept[key]]))
            if not any(matches(o, concept) for o in objects):
                return concept
        return None

    def sample(self):
        """One (scene, prompt) pair with every matching instance."""
        return self.scene_samples(1)[0]

    def scene_samples(self, count):
        """`count` samples on one scene, each with its own prompt.

        The prompts are drawn as `sample()` draws one, each drawn again (up
        to 20 times) while it repeats an earlier one of the scene. Several
        prompts on one image are a contrast a single pair lacks: the same
        pixels, answered differently by the text. `scene_samples(1)` is
        `sample()`.
        """
        if count < 1:
            raise ValueError(f"`count` must be at least 1; got {count}.")
        image, objects = self.scene()
        samples, phrases = [], set()
        for _ in range(count):
            concept = self.concept(objects)
            for _ in range(20):
                if phrase(concept) not in phrases:
                    break
                concept = self.concept(objects)
            phrases.add(phrase(concept))
            samples.append(self._answer(image, objects, concept))
        return samples

    def _answer(self, image, objects, concept):
        found = [o for o in objects if matches(o, concept)]
        boxes, masks = [], []
        for obj in found:
            ys, xs = np.nonzero(obj["mask"])
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            masks.append(obj["mask"])
        return {
            "image": image,
            "prompt": phrase(concept),
            "concept": concept,  # the prompt's attributes, {"color": "red", "shape": "circle"}
            "boxes": np.asarray(boxes, "float32").reshape(-1, 4),  # pixel xyxy
            "masks": np.asarray(masks, bool).reshape(-1, self.image_size, self.image_size),
            "objects": [{k: o[k] for k in ("shape", "color", "size")} for o in objects],
        }


def collate(samples, preprocessor, max_objects, prompts_per_image=1):
    """Samples -> `(x, y)`: model inputs and padded training targets.

    With `prompts_per_image` K > 1, samples `K i` to `K i + K - 1` share a
    scene, and `x["images"]` holds each scene once: `(B / K, S, S, 3)`
    beside `B` prompts, which the model encodes once for its K prompts.
    """
    if prompts_per_image > 1:
        if len(samples) % prompts_per_image or any(
            s["image"] is not samples[i - i % prompts_per_image]["image"] for i, s in enumerate(samples)
        ):
            raise ValueError(
                f"`prompts_per_image={prompts_per_image}` needs the samples in groups of "
                f"{prompts_per_image} on one scene (`ShapesGenerator.scene_samples`); got "
                f"{len(samples)} samples that are not."
            )
    x, _ = preprocessor([s["image"] for s in samples], [s["prompt"] for s in samples])
    if prompts_per_image > 1:
        x["images"] = x["images"][::prompts_per_image]
    size = samples[0]["image"].shape[0]
    batch = len(samples)
    boxes = np.zeros((batch, max_objects, 4), "float32")
    masks = np.zeros((batch, max_objects, size, size), "float32")
    valid = np.zeros((batch, max_objects), "float32")
    for i, s in enumerate(samples):
        n = len(s["boxes"])
        boxes[i, :n] = s["boxes"] / size
        masks[i, :n] = s["masks"]
        valid[i, :n] = 1.0
    return x, {"boxes": boxes, "masks": masks, "valid": valid}


class SyntheticShapesDataset(keras.utils.PyDataset):
    """Batches of `(x, y)` for `fit`, generated on the fly and reproducible.

    Batch `i` is a function of `(seed, i)` only, so epochs repeat exactly and
    a held-out set is another seed. Note that numpy seeds `(s, 0)` as `s`:
    batch 0 of seed `s` holds `ShapesGenerator(seed=s)`'s first samples, so
    hold out a `ShapesGenerator` seed that no training stream uses.

    Args:
        preprocessor: `SAM3PromptableConceptImageSegmenterPreprocessor` whose
            image converter has the generator's `image_size`.
        batch_size: int. Defaults to `8`.
        steps: int. Batches per epoch. Defaults to `100`.
        seed: int. Defaults to `0`.
        offset: int. Index of the first batch in the stream. Defaults to `0`.
        prompts_per_image: int. Prompts drawn on each scene
            (`ShapesGenerator.scene_samples`): a batch holds
            `batch_size / prompts_per_image` scenes, each image once
            (`x["images"]` has that batch size) and its prompts consecutive
            (`batch_size` of them), so that the model encodes each image
            once for its prompts (`SAM3Backbone`). A training option: at `1`
            (the default) the stream is the one held-out sets are drawn
            from. Defaults to `1`.
        workers, use_multiprocessing, max_queue_size: `keras.utils.PyDataset`'s.
        **generator_kwargs: passed to `ShapesGenerator`.
    """

    def __init__(
        self,
        preprocessor,
        batch_size=8,
        steps=100,
        seed=0,
        offset=0,
        prompts_per_image=1,
        workers=1,
        use_multiprocessing=False,
        max_queue_size=10,
        **generator_kwargs,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        ShapesGenerator(**generator_kwargs)  # unknown arguments fail here, not at the first batch
        if prompts_per_image < 1 or batch_size % prompts_per_image:
            raise ValueError(
                f"`prompts_per_image` must be at least 1 and divide `batch_size` ({batch_size}); "
                f"got {prompts_per_image}."
            )
        self.prompts_per_image = prompts_per_image
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.offset = offset
        self.generator_kwargs = generator_kwargs
        self.max_objects = generator_kwargs.get("max_objects", 4)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        generator = ShapesGenerator(seed=(self.seed, self.offset + index), **self.generator_kwargs)
        per_image = self.prompts_per_image
        samples = [s for _ in range(self.batch_size // per_image) for s in generator.scene_samples(per_image)]
        return collate(samples, self.preprocessor, self.max_objects, per_image)
