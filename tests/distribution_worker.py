"""Run by tests/test_distribution.py in a fresh JAX process with simulated
host devices: the training loss of one batch and one fit step, on a single
device and under Keras' DataParallel and ModelParallel."""

import json
import sys

import keras
import numpy as np


def run(distribution):
    from keras_sam3.distribution import sam3_layout_map
    from tests.models.test_fit import SAM3Loss
    from tests.models.test_fit import training_batch
    from tests.models.test_fit import training_segmenter

    devices = keras.distribution.list_devices("cpu")
    if distribution == "data":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    elif distribution == "model":
        mesh = keras.distribution.DeviceMesh((2, len(devices) // 2), ["batch", "model"], devices)
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=sam3_layout_map(mesh), batch_dim_name="batch")
        )
    segmenter = training_segmenter()
    for layer in segmenter._flatten_layers():  # deterministic steps to compare
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    segmenter.compile(optimizer=keras.optimizers.SGD(1e-5), loss=SAM3Loss(pad_num_queries=5))
    x, y = training_batch(segmenter)
    loss = segmenter.evaluate(x, y, batch_size=4, verbose=0)
    history = segmenter.fit(x, y, batch_size=4, epochs=2, verbose=0)
    sharded = [
        v.path
        for v in segmenter.trainable_variables
        if len(v.value.sharding.device_set) > 1 and not v.value.sharding.is_fully_replicated
    ]
    return {
        "devices": len(devices),
        "evaluate_loss": float(loss),
        "fit_losses": [float(v) for v in history.history["loss"]],
        "sharded_variables": len(sharded),
        "example_sharded": sharded[:3],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(run(sys.argv[1])))
