"""`SAM3PromptableConceptImageSegmenterPreprocessor`: raw images and prompts
-> `SAM3Backbone` inputs."""

import numpy as np

from keras_sam3.models.backbone import PAD_LABEL
from keras_sam3.models.image_converter import SAM3ImageConverter

BOX_ONLY_PROMPT = "visual"  # what the reference (and Meta) prompt when only boxes are given
SHORT_PROMPT_LENGTH = 8  # start token, up to six words' tokens, end token


def _per_item(value, count, name, unit="image"):
    """`None`, one item for every image (or concept), or a list of `count` items."""
    if value is None:
        return [None] * count
    if isinstance(value, str):
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ValueError(f"Got {count} {unit}s but {len(value)} {name}; give one per {unit}.")
    return value


def _box_lists(boxes, count, unit="image"):
    """Per image (or concept), `None` or an `(N, 4)` float array of boxes."""
    lists = _per_item(boxes, count, "box lists", unit)
    for i, item in enumerate(lists):
        if item is None:
            continue
        try:
            array = np.asarray(item, "float64")
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"The boxes of {unit} {i} must be a list of (x1, y1, x2, y2) boxes; got {item!r}."
            ) from e
        if array.size == 0:
            array = array.reshape(0, 4)
        elif array.shape == (4,):
            array = array[None]  # one box given without its list
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(
                f"The boxes of {unit} {i} must be a list of (x1, y1, x2, y2) boxes; got "
                f"{item!r}. With {count} {unit}s, give one list of boxes per {unit}, e.g. "
                "[[[x1, y1, x2, y2]], ...]."
            )
        lists[i] = array
    return lists


def normalize_boxes(boxes, labels, size):
    """Pixel xyxy boxes of one image -> normalized cxcywh and int labels.

    Boxes must be finite with `x2 > x1` and `y2 > y1`. Parts outside the
    image are clipped to it; a box with nothing inside the image is an
    error. Labels are 1 (positive, the default) or 0 (negative).
    """
    height, width = size
    boxes = np.asarray(boxes, "float64").reshape(-1, 4)
    if labels is None:
        labels = np.ones(len(boxes), "int32")
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(f"Got {len(boxes)} boxes but {len(labels)} box labels.")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(f"Box labels must be 1 (positive) or 0 (negative); got {labels.tolist()}.")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"Boxes must be finite; got {boxes.tolist()}.")
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise ValueError(
            f"Boxes are (x1, y1, x2, y2) pixels with x2 > x1 and y2 > y1; got {boxes.tolist()}."
        )
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    if np.any(clipped[:, 2] <= clipped[:, 0]) or np.any(clipped[:, 3] <= clipped[:, 1]):
        raise ValueError(
            f"A box lies entirely outside the {width}x{height} image: {boxes.tolist()}."
        )
    x1, y1, x2, y2 = (clipped / [width, height, width, height]).T
    cxcywh = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
    return cxcywh.astype("float32"), labels.astype("int32")


def pad_boxes(per_image_boxes, per_image_labels):
    """Ragged per-image boxes -> `(B, Nb, 4)` and `(B, Nb)` padded with -10."""
    count = max([len(b) for b in per_image_boxes] + [0])
    boxes = np.full((len(per_image_boxes), count, 4), float(PAD_LABEL), "float32")
    boxes[..., 2:] = 0.0  # a padded cxcywh box is (-10, -10, 0, 0), as the reference's
    labels = np.full((len(per_image_boxes), count), PAD_LABEL, "int32")
    for i, (b, l) in enumerate(zip(per_image_boxes, per_image_labels)):
        boxes[i, : len(b)] = b
        labels[i, : len(l)] = l
    return boxes, labels


def trim_prompt_padding(token_ids, padding_mask, short_length=SHORT_PROMPT_LENGTH):
    """Token ids and padding mask cut to their first `short_length` columns
    when every prompt's tokens lie there; otherwise returned as they are.

    Trailing padding changes no output of the model: the text encoder's
    attention is causal, so a real token never reads a later column, and
    every later reader of the text features (the DETR encoder and decoder,
    the scoring, the mask decoder) masks padded tokens. It only costs time:
    the text encoder runs on every column. One short length rather than
    each batch's own keeps compiled backends (JAX, TensorFlow) to two input
    shapes.

    Args:
        token_ids, padding_mask: arrays `(B, T)`, padding at the end.
        short_length: int. Defaults to `8`.
    """
    token_ids, padding_mask = np.asarray(token_ids), np.asarray(padding_mask)
    if padding_mask.shape[-1] <= short_length or np.any(padding_mask[:, short_length:]):
        return token_ids, padding_mask
    return token_ids[:, :short_length], padding_mask[:, :short_length]


class SAM3PromptableConceptImageSegmenterPreprocessor:
    """Images, text prompts and box prompts -> `SAM3Backbone` inputs.

    Args:
        tokenizer: `SAM3Tokenizer`.
        image_converter: `SAM3ImageConverter`. Defaults to a 1008 px one.

    Call arguments:
        images: one image, a batch or a list (uint8, floats in [0, 255],
            PIL images; grayscale becomes RGB, transparency is composited
            onto white).
        prompts: optional; a string for every image or one per image (`None`
            for an image prompted by its boxes alone).
        boxes: optional; per image, a list of `(x1, y1, x2, y2)` pixel boxes
            of the original image (possibly empty). Parts of a box outside
            the image are clipped to it; a box entirely outside is an error.
        box_labels: optional; per image, 1 / 0 per box (default all 1).

    Every image needs a text prompt, boxes, or both.

    Returns:
        `(inputs, original_sizes)`: the backbone's input dict and a list of
        `(height, width)`.

    Example (the embedded model's preprocessor, without its weights):

    >>> preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor.from_preset("sam3_shapes")
    >>> image = np.zeros((60, 90, 3), "uint8")
    >>> inputs, sizes = preprocessor(image, prompts="red circle", boxes=[[(10, 20, 40, 50)]])
    >>> sizes, tuple(inputs["images"].shape), tuple(inputs["token_ids"].shape)
    ([(60, 90)], (1, 128, 128, 3), (1, 16))
    >>> [round(float(v), 3) for v in inputs["boxes"][0, 0]]  # normalized cx, cy, w, h
    [0.278, 0.583, 0.333, 0.5]
    """

    # keras-hub's `Task.summary()` prints the preprocessor by name.
    name = "sam3_promptable_concept_image_segmenter_preprocessor"

    def __init__(self, tokenizer, image_converter=None):
        self.tokenizer = tokenizer
        self.image_converter = image_converter or SAM3ImageConverter()

    @classmethod
    def from_preset(cls, preset, image_size=None):
        """The preprocessor of any source `SAM3PromptableConceptImageSegmenter.from_preset`
        reads, without loading its weights: its tokenizer and the model's
        image size (`image_size` for a Hugging Face checkpoint converted at
        another size).

        Raises:
            ValueError: the preset ships no tokenizer.
        """
        from keras_sam3.presets import load_tokenizer_and_image_size

        tokenizer, size = load_tokenizer_and_image_size(preset, image_size, require_tokenizer=True)
        return cls(tokenizer, SAM3ImageConverter(size))

    def encode_prompts(self, prompts):
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"Prompts must be strings; got {prompt!r}.")
            if not prompt.strip():
                raise ValueError("A text prompt is empty; give a noun phrase or use boxes only.")
        return self.tokenizer(list(prompts))

    def _encode_boxes(self, box_lists, box_labels, sizes, unit):
        """`_box_lists` output and labels, per image (or concept) in pixels of
        `sizes[i]` -> padded normalized cxcywh boxes and labels."""
        if box_labels is not None and all(b is None for b in box_lists):
            raise ValueError("Got box_labels but no boxes.")
        labels = _per_item(box_labels, len(sizes), "box label lists", unit)
        normalized = []
        for i, (b, l, size) in enumerate(zip(box_lists, labels, sizes)):
            if b is None or not len(b):
                if l is not None and len(l):
                    raise ValueError(f"{unit.capitalize()} {i} has box labels {list(l)} but no boxes.")
                normalized.append((np.zeros((0, 4)), np.zeros(0)))
            else:
                normalized.append(normalize_boxes(b, l, size))
        return pad_boxes([n[0] for n in normalized], [n[1] for n in normalized])

    def encode_prompts_and_boxes(self, prompts, boxes, box_labels, sizes, unit="image"):
        """Text and box prompts, one entry per image (or concept), sizes the
        `(height, width)` their boxes are in.

        Every entry needs a text prompt, boxes, or both; an entry with boxes
        and no text (`prompts=None`, or `None` in the list) is prompted
        "visual", as the reference does.

        Returns:
            `(token_ids, padding_mask, boxes, box_labels)` arrays.
        """
        count = len(sizes)
        box_lists = _box_lists(boxes, count, unit)
        has_boxes = [b is not None and len(b) > 0 for b in box_lists]
        texts = _per_item(prompts, count, "prompts", unit)
        if prompts is None and not any(has_boxes):
            raise ValueError("Give a text prompt, boxes, or both: got neither.")
        missing = [i for i, (t, b) in enumerate(zip(texts, has_boxes)) if t is None and not b]
        if missing:
            raise ValueError(
                f"{unit.capitalize()}s {missing} have neither a text prompt nor boxes; give "
                f"every {unit} a text prompt, boxes, or both."
            )
        texts = [BOX_ONLY_PROMPT if t is None else t for t in texts]
        token_ids, padding_mask = self.encode_prompts(texts)
        box_array, label_array = self._encode_boxes(box_lists, box_labels, sizes, unit)
        return token_ids, padding_mask, box_array, label_array

    def __call__(self, images, prompts=None, boxes=None, box_labels=None):
        pixels, sizes = self.image_converter(images)
        token_ids, padding_mask, box_array, label_array = self.encode_prompts_and_boxes(
            prompts, boxes, box_labels, sizes
        )
        inputs = {
            "images": pixels,
            "token_ids": token_ids,
            "padding_mask": padding_mask,
            "boxes": box_array,
            "box_labels": label_array,
        }
        return inputs, sizes
