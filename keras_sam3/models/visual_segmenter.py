"""`SAM3PromptableVisualImageSegmenter`: clicks, boxes and masks in, masks at
the original size out (SAM 3's promptable visual segmentation on images)."""

import numpy as np
from keras import ops

from keras_sam3.models.image_converter import SAM3ImageConverter
from keras_sam3.ops.masks import resize_bilinear


class SAM3ImageFeatures:
    """One encoded image, for interactive rounds without re-encoding."""

    def __init__(self, features, original_size):
        self.features = features
        self.original_size = tuple(original_size)


class SAM3PromptableVisualImageSegmenter:
    """Segments the object a click, a box or a previous mask points at.

    Coordinates are pixels of the original image. Each round can pass the
    previous round's `low_res_logits` back as `mask_logits` to refine.

    Args:
        tracker: `SAM3Tracker`.
        image_converter: `SAM3ImageConverter`; defaults to the tracker's size.

    Example (with a Hugging Face SAM 3 checkpoint, e.g. a local copy of
    `facebook/sam3`):

    ```python
    segmenter = SAM3PromptableVisualImageSegmenter.from_checkpoint("sam3_dir")
    encoding = segmenter.encode(image)
    first = segmenter.segment_encoded(encoding, points=[(120, 80)], labels=[1])
    refined = segmenter.segment_encoded(
        encoding, points=[(120, 80), (40, 30)], labels=[1, 0],
        mask_logits=first["low_res_logits"][first["iou_scores"].argmax()],
        multimask_output=False)
    ```
    """

    def __init__(self, tracker, image_converter=None):
        self.tracker = tracker
        self.image_converter = image_converter or SAM3ImageConverter(tracker.prompt_encoder.image_size)

    @classmethod
    def from_checkpoint(cls, directory, add_no_memory_embedding=True, dtype=None, concept_segmenter=None):
        """From a Hugging Face checkpoint (local directory or `hf://`).

        With `concept_segmenter` (loaded from the same checkpoint) the tracker
        shares its ViT: one copy of the trunk's weights, and `encode_both`
        runs it once for both kinds of prompt.
        """
        from keras_sam3.convert.hf_to_keras import convert_tracker
        from keras_sam3.convert.sources import resolve_checkpoint

        vit = None if concept_segmenter is None else concept_segmenter.backbone.vision_encoder.backbone
        tracker, _ = convert_tracker(resolve_checkpoint(directory), add_no_memory_embedding, dtype, vit=vit)
        return cls(tracker)

    def encode_both(self, concept_segmenter, image):
        """One ViT run for both models: `(SAM3ImageEncoding for
        concept_segmenter.segment_encoded, SAM3ImageFeatures for
        segment_encoded)`. The two must share the ViT (`from_checkpoint(...,
        concept_segmenter=...)`)."""
        from keras_sam3.models.backbone import image_encoding
        from keras_sam3.models.segmenter import SAM3ImageEncoding

        vision_encoder = concept_segmenter.backbone.vision_encoder
        if vision_encoder.backbone is not self.tracker.vision_encoder.backbone:
            raise ValueError("The tracker does not share the concept model's ViT; see from_checkpoint.")
        pixels, sizes = self.image_converter(image)
        if len(sizes) != 1:
            raise ValueError(f"Encode one image at a time; got {len(sizes)}.")
        trunk = vision_encoder.backbone(pixels)
        levels = vision_encoder.neck(trunk)
        encoding = image_encoding(concept_segmenter.backbone, levels)
        concept = SAM3ImageEncoding({k: ops.convert_to_numpy(v) for k, v in encoding.items()}, sizes)
        return concept, SAM3ImageFeatures(self.tracker.encode_trunk(trunk), sizes[0])

    def encode(self, image):
        """Runs the image encoder once for `image` (any size)."""
        pixels, sizes = self.image_converter(image)
        if len(sizes) != 1:
            raise ValueError(f"Encode one image at a time; got {len(sizes)}.")
        return SAM3ImageFeatures(self.tracker.encode(pixels), sizes[0])

    def _to_model_pixels(self, xy, size):
        height, width = size
        scale = self.image_converter.image_size
        xy = np.asarray(xy, "float32")
        if not np.all(np.isfinite(xy)):
            raise ValueError("Point and box coordinates must be finite.")
        return xy * np.array([scale / width, scale / height], "float32")

    @staticmethod
    def _check_points(points, size):
        """`(N, 2)` clicks inside the `(height, width)` image (edges included)."""
        height, width = size
        xy = np.asarray(points, "float32")
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"points are a list of (x, y) pixel pairs; got an array of shape {xy.shape}.")
        if not np.all(np.isfinite(xy)):
            raise ValueError("Point and box coordinates must be finite.")
        outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
        if np.any(outside):
            raise ValueError(
                f"Point(s) {xy[outside].tolist()} lie outside the {width} x {height} (width x height) "
                "image; points are (x, y) pixels of the original image."
            )
        return xy

    def _mask_input(self, mask_logits):
        """`(4h, 4w)` or `(1, 4h, 4w)` logits -> the tracker's `(1, 4h, 4w, 1)`."""
        side = 4 * self.tracker.prompt_encoder.grid_size
        logits = np.asarray(mask_logits, "float32")
        if logits.shape not in ((side, side), (1, side, side)):
            raise ValueError(
                f"mask_logits are one mask's low-resolution logits, ({side}, {side}) or "
                f"(1, {side}, {side}) (one of a previous round's `low_res_logits`); got "
                f"shape {logits.shape}."
            )
        return logits.reshape(1, side, side, 1)

    def segment_encoded(
        self, encoding, points=None, labels=None, box=None, mask_logits=None, multimask_output=True
    ):
        """One prompt (clicks and / or a box, optionally a previous mask).

        Args:
            encoding: from `encode`.
            points: list of `(x, y)` pixels of the original image, inside
                it (edges included).
            labels: per point 1 (positive) or 0 (negative); default all 1.
            box: `(x1, y1, x2, y2)` pixels of the original image; parts
                outside the image are kept as given (as the reference does),
                a box entirely outside is an error.
            mask_logits: `(4h, 4w)` or `(1, 4h, 4w)` low-resolution logits of
                one mask of a previous round (`low_res_logits[k]`, or the whole
                `low_res_logits` of a `multimask_output=False` round).
            multimask_output: bool. Three candidate masks, or the best one.

        Returns:
            A dict: `masks` bool `(K, H, W)` at the original size,
            `iou_scores` `(K,)`, `object_score_logit` float and
            `low_res_logits` `(K, 4h, 4w)` (to feed back as `mask_logits`).
        """
        size = encoding.original_size
        kwargs = {}
        xy = None
        if points is not None and np.size(points):
            xy = self._to_model_pixels(self._check_points(points, size), size)
        num_points = 0 if xy is None else len(xy)
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if len(labels) != num_points or not np.all(np.isin(labels, (0, 1))):
                raise ValueError(
                    f"Give one label, 1 or 0, per point; got {len(labels)} label(s) "
                    f"{labels.tolist()} for {num_points} point(s)."
                )
        if num_points:
            if labels is None:
                labels = np.ones(num_points, "int32")
            # (N, 2) -> (B=1, P=1, N, 2)
            kwargs.update(points=xy.reshape(1, 1, -1, 2), labels=labels.astype("int32").reshape(1, 1, -1))
        if box is not None:
            if np.size(box) != 4:
                raise ValueError(f"A box is four pixel coordinates (x1, y1, x2, y2); got {box}.")
            corners = np.asarray(box, "float32").reshape(2, 2)
            if np.any(corners[1] <= corners[0]):
                raise ValueError(f"A box is (x1, y1, x2, y2) with x2 > x1 and y2 > y1; got {box}.")
            height, width = size
            if corners[1, 0] <= 0 or corners[1, 1] <= 0 or corners[0, 0] >= width or corners[0, 1] >= height:
                # A box partly outside is kept as given, as the reference does.
                raise ValueError(
                    f"The box {box} lies entirely outside the {width} x {height} (width x height) "
                    "image; boxes are (x1, y1, x2, y2) pixels of the original image."
                )
            kwargs["boxes"] = self._to_model_pixels(corners, size).reshape(1, 1, 4)
        if mask_logits is not None:
            kwargs["masks"] = self._mask_input(mask_logits)
        out = self.tracker.decode(encoding.features, multimask_output=multimask_output, **kwargs)
        out = {k: ops.convert_to_numpy(v) for k, v in out.items()}
        low_res = out["masks"].astype("float32")[0, 0]  # (K, 4h, 4w)
        return {
            # As the reference's post-processing: resize the logits, then > 0.
            "masks": resize_bilinear(low_res, size) > 0.0,
            "iou_scores": out["iou_scores"].astype("float32")[0, 0],
            "object_score_logit": float(out["object_score_logits"][0, 0, 0]),
            "low_res_logits": low_res,
        }

    def segment(self, image, points=None, labels=None, box=None, mask_logits=None, multimask_output=True):
        """`encode(image)` then `segment_encoded(...)`."""
        return self.segment_encoded(self.encode(image), points, labels, box, mask_logits, multimask_output)
