"""`fit` with SAM3Loss on the tiny configuration, on every backend."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_sam3 import SAM3ImageConverter
from keras_sam3 import SAM3PromptableConceptImageSegmenter
from keras_sam3 import SAM3PromptableConceptImageSegmenterPreprocessor
from keras_sam3.data.synthetic_shapes import ShapesGenerator
from keras_sam3.data.synthetic_shapes import collate
from keras_sam3.data.synthetic_shapes import shapes_tokenizer
from keras_sam3.losses import SAM3Loss
from tests.models.tiny import IMAGE_SIZE
from tests.models.tiny import tiny_backbone


def training_segmenter():
    keras.utils.set_random_seed(0)
    tokenizer = shapes_tokenizer()
    preprocessor = SAM3PromptableConceptImageSegmenterPreprocessor(tokenizer, SAM3ImageConverter(IMAGE_SIZE))
    backbone = tiny_backbone(vocabulary_size=tokenizer.vocabulary_size)
    return SAM3PromptableConceptImageSegmenter(backbone=backbone, preprocessor=preprocessor)


def training_batch(segmenter, batch_size=4, with_boxes=True):
    """Text prompts, plus (optionally) each prompt's first instance as a box exemplar."""
    generator = ShapesGenerator(image_size=IMAGE_SIZE, seed=3)
    samples = [generator.sample() for _ in range(batch_size)]
    while all(len(s["boxes"]) for s in samples):  # keep one absent-concept prompt
        samples[-1] = generator.sample()
    x, y = collate(samples, segmenter.preprocessor, max_objects=4)
    if with_boxes:
        boxes = [s["boxes"][:1] for s in samples]
        x, _ = segmenter.preprocessor(
            [s["image"] for s in samples], [s["prompt"] for s in samples], boxes=boxes
        )
    return x, y


def compile_for_test(segmenter, learning_rate=1e-3):
    segmenter.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=SAM3Loss(pad_num_queries=5))


def loss_value(segmenter, x, y):
    y_pred = segmenter(x, training=False)
    loss = segmenter._sam3_loss({k: ops.convert_to_tensor(v) for k, v in y.items()}, y_pred)
    return float(ops.convert_to_numpy(loss))  # (detached on torch)


def gradients(model, x, y):
    """Gradients of SAM3Loss for every trainable variable, per backend."""
    loss_fn = model._sam3_loss
    y = {k: ops.convert_to_tensor(v) for k, v in y.items()}
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def f(values, x, y):
            y_pred, _ = model.stateless_call(values, non_trainable, x, training=True)
            return loss_fn(y, y_pred)

        from keras_sam3.ops.matching import raise_host_errors

        # Compiled: op-by-op (un-jitted) differentiation takes minutes on a CPU.
        grads = [np.asarray(g) for g in jax.jit(jax.grad(f))(trainable, x, y)]
        raise_host_errors()  # compiled, the matching reports its errors from a host call
        return grads
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        return [None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in grads]
    for v in model.trainable_variables:
        v.value.grad = None  # backward() adds to what an earlier call left
    loss = loss_fn(y, model(x, training=True))
    loss.backward()
    # Copies: the arrays would share memory with the next call's gradients.
    return [None if v.value.grad is None else v.value.grad.detach().cpu().numpy().copy() for v in model.trainable_variables]


def test_gradients_reach_every_trainable_variable():
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    grads = gradients(segmenter, x, y)
    names = [v.path for v in segmenter.trainable_variables]
    assert len(names) > 100
    dead = [n for n, g in zip(names, grads) if g is None or not np.any(g)]
    assert dead == [], f"no gradient for {dead}"
    assert all(np.all(np.isfinite(g)) for g in grads if g is not None)
    # The one neck level the concept model does not read is not trainable.
    assert not any("fpn_layers_3" in n for n in names)


def test_fit_lowers_the_loss():
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    before = loss_value(segmenter, x, y)
    history = segmenter.fit(x, y, batch_size=4, epochs=6, verbose=0)
    after = loss_value(segmenter, x, y)
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < 0.9 * before, (before, after)


def test_train_and_test_on_batch_take_the_target_dict():
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    before = segmenter.test_on_batch(x, y)
    assert np.isclose(before, loss_value(segmenter, x, y), rtol=1e-4), before
    for _ in range(6):
        logs = segmenter.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])
    assert segmenter.test_on_batch(x, y) < 0.9 * before


def test_default_compile_sets_the_sam3_loss():
    # keras-hub's Task compiles at construction: fit needs no compile() call.
    segmenter = training_segmenter()
    assert isinstance(segmenter._sam3_loss, SAM3Loss)
    segmenter.freeze_encoders(image=False)
    assert segmenter.backbone.vision_encoder.trainable and not segmenter.backbone.text_encoder.trainable


def test_freezing_the_encoders_takes_one_line():
    segmenter = training_segmenter()
    segmenter.freeze_encoders()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    encoders = segmenter.backbone.vision_encoder.weights + segmenter.backbone.text_encoder.weights
    frozen_before = [np.array(v) for v in encoders]
    head = segmenter.backbone.detr_decoder.weights
    head_before = [np.array(v) for v in head]
    segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert all(np.array_equal(a, np.array(v)) for a, v in zip(frozen_before, encoders))
    assert any(not np.array_equal(a, np.array(v)) for a, v in zip(head_before, head))


def test_save_load_and_continue_training(tmp_path):
    segmenter = training_segmenter()
    # Some biases have an exactly-zero true gradient (key biases: softmax
    # ignores a per-query constant); Adam's default epsilon turns their
    # round-off into full-size steps. A larger epsilon keeps those steps tiny
    # while a lost optimizer state (m, v, iterations) still shows at ~1e-3.
    segmenter.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-3), loss=SAM3Loss(pad_num_queries=5))
    x, y = training_batch(segmenter)
    segmenter.fit(x, y, batch_size=4, epochs=2, verbose=0)
    path = str(tmp_path / "segmenter.keras")
    segmenter.save(path)
    restored = keras.saving.load_model(path)
    # Without dropout the two continuations must agree step for step.
    for model in (segmenter, restored):
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
        model.train_function = None  # retrace without dropout
    np.testing.assert_allclose(loss_value(segmenter, x, y), loss_value(restored, x, y), rtol=1e-6)
    assert isinstance(restored._sam3_loss, SAM3Loss)
    assert int(restored.optimizer.iterations) == int(segmenter.optimizer.iterations) == 2
    segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0)
    restored.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for a, b in zip(segmenter.trainable_variables, restored.trainable_variables):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5, err_msg=a.path)


@pytest.mark.parametrize("mode", ["frozen_encoders", "lora"])
def test_frozen_and_lora_models_reload_as_they_were_saved(tmp_path, mode):
    """The components' configs rebuild their sub-layers trainable: the
    backbone's `training_state` brings back what was frozen and which layers
    carry LoRA, so the optimizer state fits and training goes on as before."""
    segmenter = training_segmenter()
    if mode == "lora":
        segmenter.backbone.enable_lora(2)
    else:
        segmenter.freeze_encoders()
    segmenter.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-3), loss=SAM3Loss(pad_num_queries=5))
    x, y = training_batch(segmenter)
    segmenter.fit(x, y, batch_size=4, epochs=2, verbose=0)
    path = str(tmp_path / "segmenter.keras")
    segmenter.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras skipping an optimizer state that no longer fits
        restored = keras.saving.load_model(path)
    names = lambda model: [v.path for v in model.trainable_variables]  # noqa: E731
    assert names(restored) == names(segmenter)
    assert len(names(segmenter)) < len(segmenter.weights)
    assert int(restored.optimizer.iterations) == 2
    for a, b in zip(segmenter.optimizer.variables, restored.optimizer.variables):
        if "lora_kernel" not in a.path:  # LoRA comes back merged into the kernel (below)
            np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)
    np.testing.assert_allclose(loss_value(segmenter, x, y), loss_value(restored, x, y), rtol=1e-5)
    # The frozen weights stay put (dropout's random-generator states move).
    frozen = [v for v in restored.non_trainable_variables if "seed_generator" not in v.path]
    frozen_before = {v.path: np.array(v) for v in frozen}
    restored.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for v in frozen:
        np.testing.assert_array_equal(np.array(v), frozen_before[v.path], err_msg=v.path)
    if mode == "lora":
        # Keras saves the adapters merged into the kernel; after loading they
        # start again from B = 0 (same outputs) and still train.
        moved = [v.path for v in restored.trainable_variables if "lora_kernel_b" in v.path and np.any(np.array(v))]
        assert moved


def test_lora_trains_only_the_adapters():
    segmenter = training_segmenter()
    segmenter.backbone.enable_lora(2)
    compile_for_test(segmenter)
    names = [v.path for v in segmenter.trainable_variables]
    # Keras' Dense.enable_lora freezes the kernel and keeps the bias trainable.
    assert names and all("lora" in n or n.endswith(("q_proj/bias", "v_proj/bias")) for n in names)
    assert any("lora" in n for n in names)
    assert any("q_proj" in n for n in names) and any("v_proj" in n for n in names)
    x, y = training_batch(segmenter)
    history = segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_bad_target_values_stop_the_compiled_step():
    """The value checks run in the matching's host call. They stop
    `tf.function`'s and PyTorch's steps; on JAX the host call records the
    error, the loss is NaN, the segmenter's step keeps the weights and
    `fit` raises at the end of the batch. Either way the weights stay."""
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0)  # builds the optimizer
    before = [np.array(v) for v in segmenter.trainable_variables + segmenter.optimizer.variables]
    bad = {k: v.copy() for k, v in y.items()}
    valid = tuple(np.argwhere(y["valid"] > 0)[0])
    bad["boxes"][valid] = bad["boxes"][valid][[2, 3, 0, 1]]  # x2 < x1, y2 < y1
    with pytest.raises(Exception, match=r"x2 <= x1 or y2 <= y1"):
        segmenter.fit(x, bad, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(Exception, match=r"x2 <= x1 or y2 <= y1"):
        segmenter.train_on_batch(x, bad)
    with pytest.raises(Exception, match=r"x2 <= x1 or y2 <= y1"):
        segmenter.evaluate(x, bad, batch_size=4, verbose=0)
    with pytest.raises(Exception, match="not finite"):  # NaN predictions
        segmenter.fit({**x, "images": np.full_like(x["images"], np.nan)}, y, batch_size=4, epochs=1, verbose=0)
    after = [np.array(v) for v in segmenter.trainable_variables + segmenter.optimizer.variables]
    for variable, old, new in zip(segmenter.trainable_variables + segmenter.optimizer.variables, before, after):
        if keras.backend.backend() == "tensorflow" and variable is segmenter.optimizer.iterations:
            # tf.function may run the optimizer's step count, which needs no
            # gradient, before the host call raises (docs/training.md).
            assert int(new) - int(old) <= 3
            continue
        np.testing.assert_array_equal(old, new, err_msg=variable.path)
    with pytest.raises(Exception, match=r"x2 <= x1 or y2 <= y1"):
        segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0, validation_data=(x, bad))
    history = segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0)  # good batches train again
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(Exception, match="Give model-ready inputs"):
        segmenter.fit({"images": [np.zeros((20, 20, 3), "uint8")], "prompts": ["a"]}, y, verbose=0)
    with pytest.raises(ValueError, match="Keras metrics do not apply with SAM3Loss"):
        segmenter.compile(metrics=["mae"])


def test_failed_calls_leave_the_model_usable_and_as_it_was():
    """A step that raises before producing a state (here the target check
    when the step is traced) must leave every weight in place: Keras' JAX
    `fit` / `evaluate` take them out of the variables while they run. A
    later failure must not bring back an earlier call's state. On
    TensorFlow, a first step that failed when traced must not stop the
    next from building the optimizer."""
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    no_masks = {k: v for k, v in y.items() if k != "masks"}
    expected = segmenter.predict_on_batch(x)["scores"]
    with pytest.raises(Exception, match="no 'masks'"):
        segmenter.train_on_batch(x, no_masks)  # the optimizer is not built yet
    with pytest.raises(Exception, match="no 'masks'"):
        segmenter.fit(x, no_masks, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(Exception, match="no 'masks'"):
        segmenter.evaluate(x, no_masks, batch_size=4, verbose=0)
    np.testing.assert_array_equal(segmenter.predict_on_batch(x)["scores"], expected)
    bad = {k: v.copy() for k, v in y.items()}
    valid = tuple(np.argwhere(y["valid"] > 0)[0])
    bad["boxes"][valid] = bad["boxes"][valid][[2, 3, 0, 1]]
    with pytest.raises(Exception, match=r"x2 <= x1 or y2 <= y1"):
        segmenter.evaluate(x, bad, batch_size=4, verbose=0)
    for variable in segmenter.trainable_variables:  # as load_weights would
        variable.assign(np.zeros(variable.shape, variable.dtype))
    with pytest.raises(Exception, match="no 'masks'"):
        segmenter.evaluate(x, no_masks, batch_size=4, verbose=0)
    assert all(not np.any(np.array(v)) for v in segmenter.trainable_variables)
    # A CallbackList and a single callback, as Keras takes them; the list is not changed.
    history = keras.callbacks.History()
    callbacks = keras.callbacks.CallbackList([history], model=segmenter)
    segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
    assert callbacks.callbacks == [history] and len(history.history["loss"]) == 1
    segmenter.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=keras.callbacks.History())
    segmenter.evaluate(x, y, batch_size=4, verbose=0, callbacks=[history])


def test_mask_resolution_may_change_between_batches():
    """TensorFlow retraces such a stream with an unknown mask size."""
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            masks = y["masks"] if index % 2 == 0 else y["masks"][:, :, ::2, ::2]
            return x, {**y, "masks": masks}

    history = segmenter.fit(Batches(), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_sample_weights_are_refused():
    segmenter = training_segmenter()
    compile_for_test(segmenter)
    x, y = training_batch(segmenter)
    with pytest.raises(ValueError, match="sample weights"):
        segmenter.fit(x, y, sample_weight=np.ones(4), batch_size=4, epochs=1, verbose=0)


def test_one_to_many_branch_trains_and_leaves_inference_and_evaluation_alone(tmp_path):
    """`SAM3Loss(o2m_weight > 0)`: training runs Meta's one-to-many queries
    beside the usual ones (same weights, outputs unchanged); `predict`,
    `evaluate` and the backbone never do; save -> load keeps the branch."""
    segmenter = training_segmenter()
    x, y = training_batch(segmenter)
    y_tensors = {k: ops.convert_to_tensor(v) for k, v in y.items()}
    plain = float(ops.convert_to_numpy(SAM3Loss(pad_num_queries=5)(y_tensors, segmenter(x, training=False))))
    segmenter.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-3), loss=SAM3Loss(pad_num_queries=5, o2m_weight=2.0)
    )
    backbone_outputs = segmenter.backbone(x, training=False)
    both = segmenter._one_to_many_model(x, training=False)
    assert "pred_masks_o2m" not in backbone_outputs
    for key, value in backbone_outputs.items():  # the one-to-one outputs are the backbone's
        np.testing.assert_allclose(ops.convert_to_numpy(both[key]), ops.convert_to_numpy(value), atol=1e-5, err_msg=key)
    assert both["all_pred_logits_o2m"].shape == backbone_outputs["all_pred_logits"].shape
    assert both["pred_masks_o2m"].shape == backbone_outputs["pred_masks"].shape
    assert "pred_masks_o2m" in segmenter(x, training=True) and "pred_masks_o2m" not in segmenter(x, training=False)
    # Evaluation is the one-to-one loss (Meta's evaluation runs without the branch).
    assert np.isclose(segmenter.test_on_batch(x, y), plain, rtol=1e-4)

    # Training lowers the loss and its one-to-many terms.
    terms_before = segmenter._sam3_loss.compute(y_tensors, segmenter(x, training=True))
    terms_before = {k: float(ops.convert_to_numpy(v)) for k, v in terms_before.items()}
    history = segmenter.fit(x, y, batch_size=4, epochs=6, verbose=0)
    terms_after = segmenter._sam3_loss.compute(y_tensors, segmenter(x, training=True))
    terms_after = {k: float(ops.convert_to_numpy(v)) for k, v in terms_after.items()}
    assert np.all(np.isfinite(history.history["loss"]))
    assert terms_after["total"] < 0.9 * terms_before["total"]
    o2m = [k for k in terms_after if k.endswith("_o2m")]
    assert sorted(o2m) == ["bbox_o2m", "class_o2m", "dice_o2m", "giou_o2m", "mask_o2m"]
    assert sum(terms_after[k] for k in o2m) < sum(terms_before[k] for k in o2m)

    path = str(tmp_path / "o2m.keras")
    segmenter.save(path)
    restored = keras.saving.load_model(path)
    assert restored._sam3_loss.o2m_weight == 2.0 and restored._one_to_many_model is not None
    a, b = restored(x, training=False), segmenter(x, training=False)
    np.testing.assert_allclose(ops.convert_to_numpy(a["scores"]), ops.convert_to_numpy(b["scores"]), atol=1e-6)
    restored.fit(x, y, batch_size=4, epochs=1, verbose=0)
    # Without the one-to-many masks the mask decoder runs on the one-to-one queries alone.
    restored.compile(optimizer="adam", loss=SAM3Loss(pad_num_queries=5, o2m_weight=2.0, o2m_masks=False))
    outputs = restored(x, training=True)
    assert "all_pred_logits_o2m" in outputs and "pred_masks_o2m" not in outputs
    assert outputs["pred_masks"].shape[1] == outputs["pred_logits"].shape[1]


def test_several_prompts_per_image_train_as_one_copy_per_prompt():
    """Images `(N, ...)` beside `N * K` prompts (each image encoded once):
    the loss and every gradient of the batch with each image repeated for
    its prompts, and `fit` streams such batches."""
    from keras_sam3.data.synthetic_shapes import SyntheticShapesDataset

    segmenter = training_segmenter()
    compile_for_test(segmenter)
    generator = ShapesGenerator(image_size=IMAGE_SIZE, seed=4)
    samples = generator.scene_samples(3) + generator.scene_samples(3)
    x, y = collate(samples, segmenter.preprocessor, max_objects=4)
    shared, y_shared = collate(samples, segmenter.preprocessor, max_objects=4, prompts_per_image=3)
    with pytest.raises(ValueError, match="groups of 3 on one scene"):
        collate(samples[1:] + samples[:1], segmenter.preprocessor, max_objects=4, prompts_per_image=3)
    assert shared["images"].shape[0] == 2 and shared["token_ids"].shape[0] == 6
    np.testing.assert_allclose(loss_value(segmenter, shared, y_shared), loss_value(segmenter, x, y), rtol=1e-5)
    # Dropout off for the gradients: its draws would differ between the two calls.
    dropouts = [layer for layer in segmenter._flatten_layers() if isinstance(layer, keras.layers.Dropout)]
    assert dropouts
    for layer in dropouts:
        layer.rate = 0.0
    grads, expected = gradients(segmenter, shared, y_shared), gradients(segmenter, x, y)
    scale = max(np.abs(g).max() for g in expected)
    for a, b in zip(grads, expected):
        # Summed in another order: float rounding apart.
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * scale)
    data = SyntheticShapesDataset(
        segmenter.preprocessor, batch_size=6, steps=2, seed=1, image_size=IMAGE_SIZE, prompts_per_image=3
    )
    before = [np.array(v) for v in segmenter.trainable_variables]
    history = segmenter.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.allclose(a, np.array(v)) for a, v in zip(before, segmenter.trainable_variables))
