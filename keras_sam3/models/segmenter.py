"""`SAM3PromptableConceptImageSegmenter`: raw images and prompts in, instances out."""

import os

import keras
import numpy as np
from keras import ops
from keras_hub.models import Task

from keras_sam3.models.backbone import CONVOLVED_SKIPS
from keras_sam3.models.backbone import ENCODED_TOKENS
from keras_sam3.models.backbone import IMAGE_LEVELS
from keras_sam3.models.backbone import image_encoding
from keras_sam3.models.backbone import prompt_head
from keras_sam3.models.preprocessor import trim_prompt_padding
from keras_sam3.models.segmenter_training import SAM3SegmenterTraining
from keras_sam3.models.segmenter_training import dataset_element_inputs
from keras_sam3.models.segmenter_training import jax_variables_restored
from keras_sam3.ops.masks import check_nms_threshold
from keras_sam3.ops.masks import post_process_instances


def task_outputs(backbone_outputs):
    """Backbone outputs -> keras-hub's segmenter outputs (same names, shapes)."""
    scores = ops.sigmoid(backbone_outputs["pred_logits"]) * ops.sigmoid(
        backbone_outputs["presence_logits"]
    )
    return {
        "scores": scores,  # (B, Q) in [0, 1]
        "boxes": backbone_outputs["pred_boxes"],  # (B, Q, 4) normalized xyxy
        "masks": ops.sigmoid(backbone_outputs["pred_masks"]),  # (B, Q, h, w) probabilities
    }


class SAM3ImageEncoding:
    """Encoded images, to prompt again without re-running the image encoder.

    Attributes:
        features: dict of arrays: what the prompt head reads of the images
            (`keras_sam3.models.backbone.image_encoding`).
        original_sizes: list of `(height, width)`.
    """

    def __init__(self, features, original_sizes):
        self.features = features
        self.original_sizes = list(original_sizes)

    def select(self, index, repeat):
        """Image `index`, repeated `repeat` times along the batch."""
        if not 0 <= index < len(self.original_sizes):
            raise IndexError(f"Image {index} of {len(self.original_sizes)} encoded images.")
        features = {
            k: np.repeat(np.asarray(v[index : index + 1]), repeat, axis=0)
            for k, v in self.features.items()
        }
        return features, [self.original_sizes[index]] * repeat


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3PromptableConceptImageSegmenter(SAM3SegmenterTraining, Task):
    """SAM 3 promptable concept segmentation: every instance of a concept.

    A concept is a short noun phrase ("yellow school bus"), box exemplars
    (positive or negative), or both. Inputs and outputs follow keras-hub's
    own SAM 3 segmenter, so its users switch by changing an import:

    - `predict({"images", "prompts", "boxes", "box_labels"})` on raw images
      (any size; boxes in pixel xyxy of each image, labels 1 / 0) returns
      `scores` `(B, Q)`, `boxes` `(B, Q, 4)` normalized xyxy and `masks`
      `(B, Q, h, w)` probabilities at the model's mask resolution.
    - `segment(...)` returns, per image, only the instances above a score
      threshold with masks at the original size, boxes in pixels and the
      semantic mask.
    - `encode(images)` then `segment_encoded(encoding, prompts)` runs any
      number of prompts on an image with the image encoder run once.
    - `compile()` sets Meta's SAM 3 loss and `fit` trains on model-ready
      inputs (`SAM3SegmenterTraining`).

    Args:
        backbone: `SAM3Backbone`.
        preprocessor: `SAM3PromptableConceptImageSegmenterPreprocessor`, or
            None to feed model-ready arrays.

    Example (the small shipped model and its example image, offline):
    >>> import os
    >>> from PIL import Image
    >>> from keras_sam3.presets import PRESETS_DIR
    >>> segmenter = SAM3PromptableConceptImageSegmenter.from_preset("sam3_shapes")
    >>> image = Image.open(os.path.join(PRESETS_DIR, "examples", "shapes.png"))
    >>> circle = segmenter.segment(image, prompts="red circle")[0]
    >>> tuple(circle["masks"].shape), circle["scores"].round(1).tolist()
    ((1, 128, 128), [1.0])
    >>> encoding = segmenter.encode(image)  # the image encoder runs once
    >>> per_prompt = segmenter.segment_encoded(encoding, ["triangle", "blue square"], nms_threshold=0.5)
    >>> [len(result["scores"]) for result in per_prompt]
    [2, 1]
    """

    def __init__(self, backbone, preprocessor=None, **kwargs):
        if preprocessor is not None:
            tokens = preprocessor.tokenizer.vocabulary_size
            if tokens > backbone.text_encoder.vocabulary_size:
                raise ValueError(
                    f"The tokenizer has {tokens} ids but the text encoder embeds "
                    f"{backbone.text_encoder.vocabulary_size}: they do not belong together."
                )
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        # Set before the functional init: keras-hub's Task.__init__ calls
        # `compile()`, which sets the default loss.
        self._inference_model = None
        self._image_model = None
        self._prompt_model = None
        self._sam3_loss = None
        self._one_to_many_model = None
        # === Functional model ===
        # keras-hub's three outputs, plus the raw backbone outputs the
        # training loss reads; `predict` returns only the former.
        inputs = backbone.input
        raw = backbone(inputs)
        super().__init__(inputs=inputs, outputs={**task_outputs(raw), **raw}, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Training with `SAM3Loss(o2m_weight > 0)` (see `compile`) also runs
        # Meta's one-to-many queries; inference and evaluation never do.
        if training and self._one_to_many_model is not None:
            raw = self._one_to_many_model(inputs, training=True)
            return {**task_outputs(raw), **raw}
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_config(self):
        # The preprocessor is host-side Python: the config records its sizes,
        # and its vocabulary travels as assets (preset or `.keras` file).
        config = {"backbone": keras.layers.serialize(self.backbone), "name": self.name}
        if self.preprocessor is not None:
            config["preprocessor"] = {
                "image_size": self.preprocessor.image_converter.image_size,
                "sequence_length": self.preprocessor.tokenizer.sequence_length,
            }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        preprocessor = config.pop("preprocessor", None)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
        if isinstance(preprocessor, dict):
            segmenter = cls(**config)
            segmenter._preprocessor_to_load = preprocessor  # built by `load_assets`
            return segmenter
        return cls(preprocessor=preprocessor, **config)

    def save_assets(self, directory):
        """`model.save("x.keras")`: the tokenizer's vocabulary goes with it."""
        if self.preprocessor is not None:
            self.preprocessor.tokenizer.save_assets(directory)

    def load_assets(self, directory):
        """`keras.saving.load_model`: the preprocessor comes back."""
        from keras_sam3.models.image_converter import SAM3ImageConverter
        from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
        from keras_sam3.models.tokenizer import SAM3Tokenizer

        sizes = getattr(self, "_preprocessor_to_load", None)
        if sizes is None:
            return
        tokenizer = SAM3Tokenizer.find_in_directory(directory, sequence_length=sizes["sequence_length"])
        if tokenizer is None:
            raise ValueError("The saved segmenter had a preprocessor, but its tokenizer files are not in the file's assets.")
        self.preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(
            tokenizer, SAM3ImageConverter(sizes["image_size"])
        )
        self._preprocessor_to_load = None

    @classmethod
    def from_preset(cls, preset, image_size=None, cls_without_boxes=True, dtype=None):
        """Loads a segmenter from any source.

        Args:
            preset: a registered name (`keras_sam3.presets.list_presets()`), a
                local Keras preset directory, an `hf://` or `kaggle://` Keras
                preset, or a Hugging Face SAM 3 checkpoint (a local directory
                or `hf://`, e.g. `hf://facebook/sam3`) converted on the fly.
            image_size: int, optional. Input side, for converted checkpoints
                (defaults to the checkpoint's).
            cls_without_boxes: bool. Meta's (True) or the reference's (False)
                text-only behaviour, for converted checkpoints.
            dtype: optional dtype policy.
        """
        from keras_sam3.models.image_converter import SAM3ImageConverter
        from keras_sam3.models.preprocessor import SAM3PromptableConceptImageSegmenterPreprocessor
        from keras_sam3.presets import load_backbone_and_tokenizer

        backbone, tokenizer = load_backbone_and_tokenizer(preset, image_size, cls_without_boxes, dtype)
        preprocessor = None
        if tokenizer is not None:
            preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(
                tokenizer, SAM3ImageConverter(backbone.image_size)
            )
        return cls(backbone=backbone, preprocessor=preprocessor)

    def save_to_preset(self, preset_dir, max_shard_size=10):
        """Saves the backbone and the tokenizer's vocabulary as a Keras preset."""
        from keras_sam3.presets import TOKENIZER_ASSETS

        self.backbone.save_to_preset(preset_dir, max_shard_size=max_shard_size)
        if self.preprocessor is not None:
            self.preprocessor.tokenizer.save_assets(os.path.join(preset_dir, TOKENIZER_ASSETS))

    # --- raw inputs -------------------------------------------------------
    def _require_preprocessor(self):
        if self.preprocessor is None:
            raise ValueError(
                "This segmenter has no preprocessor (loaded from a preset or checkpoint without "
                "tokenizer files: vocab.json + merges.txt, or tokenizer.json): give model-ready "
                "arrays, or attach a SAM3PromptableConceptImageSegmenterPreprocessor."
            )
        return self.preprocessor

    def _prepare(self, x):
        if isinstance(x, dict) and "token_ids" in x:
            return x, None
        if not isinstance(x, (dict, list, tuple, np.ndarray)) and not keras.ops.is_tensor(x):
            spec = dataset_element_inputs(x)
            if spec is not None and "token_ids" not in spec:
                raise ValueError(
                    f"A dataset of {sorted(spec)}: datasets and generators carry model-ready "
                    "batches (the preprocessor's output: images scaled to [-1, 1], token_ids, "
                    "padding_mask, boxes, box_labels). Give raw images and prompts as a dict."
                )
            return x, None  # a dataset or generator of model-ready batches
        if not isinstance(x, dict) or "images" not in x:
            raise ValueError(
                "Inputs are a dict with 'images' and at least one of 'prompts' or "
                f"'boxes'; got {type(x).__name__}."
            )
        unknown = set(x) - {"images", "prompts", "boxes", "box_labels"}
        if unknown:
            raise ValueError(f"Unknown input keys {sorted(unknown)}.")
        return self._preprocess(x["images"], x.get("prompts"), x.get("boxes"), x.get("box_labels"))

    def _preprocess(self, images, prompts, boxes, box_labels):
        """The preprocessor's inputs, prompts cut short when they fit
        (`trim_prompt_padding`: the same outputs, a shorter text encoder run)."""
        inputs, sizes = self._require_preprocessor()(images, prompts, boxes, box_labels)
        inputs["token_ids"], inputs["padding_mask"] = trim_prompt_padding(
            inputs["token_ids"], inputs["padding_mask"]
        )
        return inputs, sizes

    def preprocess_samples(self, x, y=None, sample_weight=None):
        # Preprocessing runs on the host before Keras sees the data (see
        # `predict`), never inside keras-hub's tf.data pipeline.
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _inference(self):
        if self._inference_model is None:
            inputs = self.backbone.input
            self._inference_model = keras.Model(inputs, task_outputs(self.backbone(inputs)))
        return self._inference_model

    def predict(self, x, batch_size=None, **kwargs):
        """keras-hub's `scores`, `boxes` and `masks` for raw or model-ready inputs."""
        inputs, _ = self._prepare(x)
        model = self._inference()
        with jax_variables_restored(model):
            return model.predict(inputs, batch_size=batch_size, **kwargs)

    def quantize(self, mode, **kwargs):
        """Not supported: see `SAM3Backbone.quantize`."""
        self.backbone.quantize(mode, **kwargs)

    def predict_on_batch(self, x):
        inputs, _ = self._prepare(x)
        return self._inference().predict_on_batch(inputs)

    def segment(
        self,
        images,
        prompts=None,
        boxes=None,
        box_labels=None,
        threshold=0.5,
        mask_threshold=0.5,
        nms_threshold=None,
    ):
        """Instances per image, at the original image size.

        Args:
            images: one image, a batch or a list (any sizes).
            prompts: a string for all images, or one per image.
            boxes, box_labels: per image, pixel xyxy boxes and 1 / 0 labels.
            threshold: float. Minimum `sigmoid(logit) * sigmoid(presence)`.
                Defaults to `0.5` (Meta's; the transformers processor uses 0.3).
            mask_threshold: float. Defaults to `0.5`.
            nms_threshold: `None` or float in [0, 1]. When given, an instance
                whose mask overlaps a higher-scoring instance of the same
                prompt with IoU above it is dropped (Meta's optional mask
                NMS; `keras_sam3.ops.masks.mask_nms`). Defaults to `None`:
                no suppression, as the reference processor.

        Returns:
            A list (one per image) of dicts: `scores` `(K,)`, `boxes` `(K, 4)`
            pixel xyxy, `masks` bool `(K, H, W)`, `indices` `(K,)` query
            indices and `semantic_mask` bool `(H, W)`.
        """
        check_nms_threshold(nms_threshold)
        inputs, sizes = self._preprocess(images, prompts, boxes, box_labels)
        outputs = self.backbone.predict_on_batch(inputs)
        return post_process_instances(outputs, sizes, threshold, mask_threshold, nms_threshold)

    # --- one image encoding, many prompts --------------------------------
    def _build_split_models(self):
        backbone = self.backbone
        size = backbone.image_size
        images = keras.Input((size, size, 3), name="images")
        vision = backbone.vision_encoder(images)
        self._image_model = keras.Model(images, image_encoding(backbone, vision))

        features = {
            k: keras.Input(tuple(v.shape[1:]), name=k) for k, v in self._image_model.output.items()
        }
        prompts = {
            k: keras.Input(tuple(v.shape[1:]), dtype=v.dtype, name=k)
            for k, v in backbone.input.items()
            if k != "images"
        }
        text = backbone.text_encoder(prompts["token_ids"], prompts["padding_mask"])
        vision = {k: features[k] for k in IMAGE_LEVELS}
        vision["fpn_position_encoding_2"] = backbone.vision_encoder.neck.position_encoding(
            features["fpn_hidden_states_2"]
        )
        outputs = prompt_head(
            backbone,
            vision,
            text["text_features"],
            text["text_mask"],
            prompts["boxes"],
            prompts["box_labels"],
            encoded_tokens=features[ENCODED_TOKENS],
            convolved_skips=[features[k] for k in CONVOLVED_SKIPS],
        )
        self._prompt_model = keras.Model({**features, **prompts}, outputs)

    def encode(self, images):
        """Runs the image encoder once; returns a `SAM3ImageEncoding`."""
        if self._image_model is None:
            self._build_split_models()
        pixels, sizes = self._require_preprocessor().image_converter(images)
        features = self._image_model.predict_on_batch(pixels)
        return SAM3ImageEncoding({k: np.asarray(v) for k, v in features.items()}, sizes)

    def segment_encoded(
        self,
        encoding,
        prompts=None,
        boxes=None,
        box_labels=None,
        image_index=0,
        threshold=0.5,
        mask_threshold=0.5,
        nms_threshold=None,
    ):
        """Several prompts on one encoded image, in one batched call.

        `prompts` is a list of strings (and/or `boxes` a list of box lists,
        `box_labels` their labels), one entry per concept; every concept
        needs a text prompt, boxes, or both. Results come back in the same
        order, each as `segment()` returns them (the thresholds, NMS
        included, are `segment()`'s). The image encoder does not run again.
        """
        check_nms_threshold(nms_threshold)
        if self._prompt_model is None:
            self._build_split_models()
        preprocessor = self._require_preprocessor()
        if isinstance(prompts, str):
            prompts = [prompts]
        if prompts is not None:
            count = len(prompts)
        else:
            count = 0 if boxes is None else len(boxes)
        if count == 0:
            raise ValueError("Give a text prompt, boxes, or both: got neither.")
        features, sizes = encoding.select(image_index, count)
        token_ids, padding_mask, box_array, label_array = preprocessor.encode_prompts_and_boxes(
            prompts, boxes, box_labels, sizes, unit="concept"
        )
        token_ids, padding_mask = trim_prompt_padding(token_ids, padding_mask)
        outputs = self._prompt_model.predict_on_batch(
            {
                **features,
                "token_ids": token_ids,
                "padding_mask": padding_mask,
                "boxes": box_array,
                "box_labels": label_array,
            }
        )
        return post_process_instances(outputs, sizes, threshold, mask_threshold, nms_threshold)
