"""`SAM3PromptableConceptImageSegmenter`: raw images and prompts in, instances out."""

import contextlib
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
from keras_sam3.ops.masks import check_nms_threshold
from keras_sam3.ops.masks import post_process_instances
from keras_sam3.ops.matching import clear_host_errors
from keras_sam3.ops.matching import raise_host_errors


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
class SAM3PromptableConceptImageSegmenter(Task):
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

    Args:
        backbone: `SAM3Backbone`.
        preprocessor: `SAM3PromptableConceptImageSegmenterPreprocessor`, or
            None to feed model-ready arrays.
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
        # === Functional model ===
        # keras-hub's three outputs, plus the raw backbone outputs the
        # training loss reads; `predict` returns only the former.
        inputs = backbone.input
        raw = backbone(inputs)
        super().__init__(inputs=inputs, outputs={**task_outputs(raw), **raw}, **kwargs)

    def get_config(self):
        # The preprocessor is host-side Python (its vocabulary travels as preset
        # assets), so only the backbone is part of the Keras config.
        return {"backbone": keras.layers.serialize(self.backbone), "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)

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
        return self._inference().predict(inputs, batch_size=batch_size, **kwargs)

    def predict_on_batch(self, x):
        inputs, _ = self._prepare(x)
        return self._inference().predict_on_batch(inputs)

    # --- training --------------------------------------------------------
    def compile(self, optimizer="auto", loss="auto", metrics=None, jit_compile="auto", **kwargs):
        """Configures `fit`; by default with Meta's SAM 3 loss.

        Args:
            optimizer: `"auto"` is AdamW (learning rate 1e-4, weight decay
                0.1, global gradient norm clipped to 1.0), or any Keras
                optimizer.
            loss: `"auto"` (or None) is `SAM3Loss()`; a `SAM3Loss` with other
                weights; or a dict of Keras losses keyed by output name
                (`scores`, `boxes`, `masks`, or a raw backbone output).
            jit_compile: with `SAM3Loss`, TensorFlow's `tf.function` runs
                without XLA whatever is asked (the matching calls scipy on
                the host through `tf.numpy_function`, which XLA cannot
                hold); other backends take it as Keras does.

        Targets for `fit` (`y`), per batch row (one prompt): `boxes`
        `(B, G, 4)` normalized xyxy, `masks` `(B, G, Hm, Wm)` 0 / 1 and
        `valid` `(B, G)`; see `keras_sam3.losses.SAM3Loss`.
        """
        from keras_sam3.losses import SAM3Loss

        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.1, global_clipnorm=1.0)
        if loss is None or (isinstance(loss, str) and loss == "auto"):
            loss = SAM3Loss()
        self._sam3_loss = loss if isinstance(loss, SAM3Loss) else None
        if self._sam3_loss is not None and (metrics or kwargs.get("weighted_metrics")):
            raise ValueError(
                "Keras metrics do not apply with SAM3Loss: its targets are each prompt's "
                "instances, not matched to the model's queries. Measure with "
                "keras_sam3.metrics.ConceptSegmentationEvaluator (cgF1, pmF1, IL_MCC, mIoU; "
                "tools/evaluate_embedded.py shows how)."
            )
        self.backbone.freeze_unread_levels()  # trainable variables are fixed here
        if self._sam3_loss is not None and keras.backend.backend() == "tensorflow":
            jit_compile = False
        super().compile(
            optimizer=optimizer,
            loss=None if self._sam3_loss is not None else loss,
            metrics=metrics,
            jit_compile=jit_compile,
            **kwargs,
        )
        if self._sam3_loss is not None:
            # So that a saved, compiled model comes back with its loss.
            self._compile_config.config["loss"] = self._sam3_loss

    def compile_from_config(self, config):
        # keras.saving.load_model restores the optimizer (and its state) and
        # the loss through this; keras skips it when `compile` is overridden.
        from keras.saving import deserialize_keras_object

        self.compile(**deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _checks_host_errors(self):
        """JAX with `SAM3Loss`: the matching's host call cannot raise under
        `jit`; it records its error and the loss is NaN (`ops.matching`)."""
        return keras.backend.backend() == "jax" and getattr(self, "_sam3_loss", None) is not None

    def _with_host_error_check(self, callbacks):
        """`callbacks` (a list, one callback or a `CallbackList`) with
        `_RaiseHostErrors` first, on JAX with `SAM3Loss`; the caller's list
        is not changed."""
        if not self._checks_host_errors():
            return callbacks
        clear_host_errors()
        if isinstance(callbacks, keras.callbacks.CallbackList):
            # Rebuilt: a CallbackList fixes its dispatch (in order, or in a
            # thread) when it is made, and the check must run in order.
            return keras.callbacks.CallbackList(
                [_RaiseHostErrors(), *callbacks.callbacks], model=self, **(callbacks.params or {})
            )
        if isinstance(callbacks, keras.callbacks.Callback):
            callbacks = [callbacks]
        return [_RaiseHostErrors(), *(callbacks or [])]

    def _build_optimizer(self):
        """Builds the optimizer before the first step rather than in it: a
        first step that fails when traced (bad targets) leaves TensorFlow's
        `tf.function` unable to create variables in the next one, and JAX's
        `fit` must find the slots to keep them (`_jax_weights_reattached`)."""
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    @contextlib.contextmanager
    def _jax_weights_reattached(self):
        """Keras' JAX `fit` and `evaluate` take the values out of the
        variables while they run. When a step raises (a target check at
        trace time, a host-call error under `run_eagerly`) `evaluate` leaves
        them out, and both do when the step raised before producing a state.
        This puts back the newest state, or else the values from before."""
        if not hasattr(self, "jax_state_sync"):
            yield
            return
        variables = list(self.variables) + list(self.metrics_variables)
        if self.optimizer is not None:
            variables += list(self.optimizer.variables)  # built by `fit` first
        before = [(v, v._value) for v in variables]
        self._jax_state = None  # a failed call's leftover state must not come back
        try:
            yield
        finally:
            self.jax_state_sync()
            self._jax_state = None
            for variable, value in before:
                if variable._value is None and value is not None and not value.is_deleted():
                    variable._value = value

    def train_step(self, *args):
        if not self._checks_host_errors():
            return super().train_step(*args)
        # JAX: a step whose loss is not finite (a host-call error, see
        # `_RaiseHostErrors`) leaves every variable as it was, as the raise in
        # the step does on the other backends.
        state, data = args
        logs, new_state = super().train_step(state, data)
        if "loss" not in logs:
            return logs, new_state
        import jax

        failed = ~ops.isfinite(logs["loss"])
        # Weights and optimizer state stay; the metrics record the step (its
        # NaN loss is what `_RaiseHostErrors` reads).
        kept = jax.tree.map(lambda new, old: jax.numpy.where(failed, old, new), new_state[:3], state[:3])
        new_state = (*kept, new_state[3])
        return logs, new_state

    @staticmethod
    def _require_model_ready(x, method):
        """`fit` and friends take the preprocessor's output, not raw images
        and prompts (preprocessing is host-side Python, outside the step)."""
        if isinstance(x, (tuple, list)) and len(x) >= 1:
            x = x[0]  # validation_data=(x, y)
        if isinstance(x, dict) and ("prompts" in x or "token_ids" not in x):
            raise ValueError(
                f"`{method}` got the keys {sorted(x)}. Give model-ready inputs: the "
                "preprocessor's output (`x, _ = segmenter.preprocessor(images, prompts, boxes)`: "
                "images scaled to [-1, 1], token_ids, padding_mask, boxes, box_labels) or a "
                "keras_sam3.data dataset. `predict` and `segment` take raw images and prompts."
            )

    def fit(self, x=None, y=None, **kwargs):
        """Keras' `fit` on model-ready inputs (for example a
        `keras_sam3.data.SyntheticShapesDataset`, a `PyDataset`, a
        `tf.data.Dataset`, a generator or arrays). keras-hub's tf.data
        preprocessing path is bypassed: preprocessing is host-side Python."""
        self._require_model_ready(x, "fit")
        if kwargs.get("validation_data") is not None:
            self._require_model_ready(kwargs["validation_data"], "fit's validation_data")
        kwargs["callbacks"] = self._with_host_error_check(kwargs.get("callbacks"))
        self._build_optimizer()
        with self._jax_weights_reattached():
            history = keras.Model.fit(self, x, y, **kwargs)
        if self._checks_host_errors():
            raise_host_errors()
        return history

    def evaluate(self, x=None, y=None, **kwargs):
        self._require_model_ready(x, "evaluate")
        if not kwargs.get("_use_cached_eval_dataset"):  # fit's validation: fit's callbacks
            kwargs["callbacks"] = self._with_host_error_check(kwargs.get("callbacks"))
        with self._jax_weights_reattached():
            result = keras.Model.evaluate(self, x, y, **kwargs)
        if self._checks_host_errors():
            raise_host_errors()
        return result

    def train_on_batch(self, x, y=None, sample_weight=None, **kwargs):
        """Keras' `train_on_batch` on model-ready inputs and a target dict
        (keras-hub's converts `y` to one tensor, which a dict is not)."""
        self._require_model_ready(x, "train_on_batch")
        if self._checks_host_errors():
            clear_host_errors()
        self._build_optimizer()
        result = keras.Model.train_on_batch(self, x, y, sample_weight=sample_weight, **kwargs)
        if self._checks_host_errors():
            _RaiseHostErrors.check(float(self._loss_tracker.result()), training=True)
        return result

    def test_on_batch(self, x, y=None, sample_weight=None, **kwargs):
        self._require_model_ready(x, "test_on_batch")
        if self._checks_host_errors():
            clear_host_errors()
        result = keras.Model.test_on_batch(self, x, y, sample_weight=sample_weight, **kwargs)
        if self._checks_host_errors():
            _RaiseHostErrors.check(float(self._loss_tracker.result()), training=False)
        return result

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self._sam3_loss is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if sample_weight is not None:
            raise ValueError("SAM3Loss takes no sample weights; mark padding with y['valid'].")
        loss = self._sam3_loss(y, y_pred)
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return loss

    def freeze_encoders(self, image=True, text=True):
        """Freezes the image encoder (ViT and FPN neck) and / or the text
        encoder; call `compile()` after. Leaves the other one as it is."""
        if image:
            self.backbone.vision_encoder.trainable = False
        if text:
            self.backbone.text_encoder.trainable = False

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


class _RaiseHostErrors(keras.callbacks.Callback):
    """JAX: raises, at the end of the batch, the error the matching's host
    call recorded in the jitted step (bad target values, non-finite
    predictions), or a non-finite loss. The segmenter's `train_step` has
    kept the weights of such a step. Not `async_safe`, so Keras runs it in
    order."""

    @staticmethod
    def check(loss, training):
        """Raises the recorded host-call error, or else for a non-finite
        `loss` (a float, or None)."""
        raise_host_errors()
        if loss is not None and not np.isfinite(loss):
            raise ValueError(
                "The loss is not finite"
                + ("; the step's update was not applied" if training else "")
                + ". Check the batch's inputs and targets"
                + (", or lower the learning rate." if training else ".")
            )

    def _check(self, logs, training):
        loss = (logs or {}).get("loss")
        self.check(None if loss is None else float(loss), training)  # float() waits for the step

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, training=True)

    def on_test_batch_end(self, batch, logs=None):
        self._check(logs, training=False)
