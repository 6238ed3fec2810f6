"""Training for `SAM3PromptableConceptImageSegmenter`: `compile()` with
Meta's SAM 3 loss, `fit` / `evaluate` / `train_on_batch` on model-ready
inputs, and the guards that stop a bad batch (its error named, the weights
as they were) on every backend."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_sam3.ops.matching import clear_host_errors
from keras_sam3.ops.matching import raise_host_errors


class SAM3SegmenterTraining:
    """Training methods of `SAM3PromptableConceptImageSegmenter` (a mixin
    placed before keras-hub's `Task`, whose methods it extends).

    Targets for `fit` (`y`), per batch row (one prompt): `boxes` `(B, G, 4)`
    normalized xyxy, `masks` `(B, G, Hm, Wm)` 0 / 1 and `valid` `(B, G)`;
    see `keras_sam3.losses.SAM3Loss`.
    """

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
        # Meta's one-to-many (DAC) queries: a training forward pass with them
        # (`call`), on the backbone's weights.
        self._one_to_many_model = None
        if self._sam3_loss is not None and self._sam3_loss.o2m_weight > 0:
            self._one_to_many_model = self.backbone.one_to_many_model(masks=self._sam3_loss.o2m_masks)
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

    def _jax_weights_reattached(self):
        """`jax_variables_restored` for the task, its metrics and its optimizer."""
        variables = list(self.metrics_variables)
        if getattr(self, "optimizer", None) is not None:
            variables += list(self.optimizer.variables)  # built by `fit` first
        return jax_variables_restored(self, variables)

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
        x = dataset_element_inputs(x) or x
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


def dataset_element_inputs(x):
    """The input spec (a dict) of a dataset's elements, for a `tf.data`
    dataset of `x` or `(x, y)` dicts; else None."""
    spec = getattr(x, "element_spec", None)
    if isinstance(spec, (tuple, list)) and spec:
        spec = spec[0]
    return spec if isinstance(spec, dict) else None


@contextlib.contextmanager
def jax_variables_restored(model, extra_variables=()):
    """Keras' JAX `fit`, `evaluate` and `predict` take the values out of the
    variables while they run. When a step raises (a target check or a wrong
    input shape when it is traced, a host-call error under `run_eagerly`, an
    interrupt) they leave them out, and the model is unusable ("'NoneType'
    object is not callable"). This puts back the newest state the call
    produced, or else the values from before it. Other backends: nothing."""
    if keras.backend.backend() != "jax":
        yield
        return
    before = [(v, v._value) for v in [*model.variables, *extra_variables]]
    model._jax_state = None  # a failed call's leftover state must not come back
    try:
        yield
    finally:
        model.jax_state_sync()
        model._jax_state = None
        for variable, value in before:
            if variable._value is None and value is not None and not value.is_deleted():
                variable._value = value


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
