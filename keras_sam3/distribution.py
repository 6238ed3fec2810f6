"""Keras distribution layouts for SAM 3 (JAX backend).

`DataParallel` needs nothing model-specific:

    keras.distribution.set_distribution(keras.distribution.DataParallel())
    segmenter = SAM3PromptableConceptImageSegmenter.from_preset(...)  # build after
    segmenter.compile(); segmenter.fit(...)

`ModelParallel` shards the large kernels over a "model" mesh axis with
`sam3_layout_map`: Megatron-style, the query / key / value projections and
the first MLP layer split their output features, the attention output
projection and the second MLP layer split their input features, so each
block needs one reduction; everything else is replicated.
"""

import keras

# Variable-path patterns (`re.fullmatch`, as LayoutMap applies them) -> layout.
COLUMN_PARALLEL = r".*/(q_proj|k_proj|v_proj|fc1)/kernel"
ROW_PARALLEL = r".*/(o_proj|out_proj|fc2)/kernel"


def sam3_layout_map(device_mesh, model_axis="model"):
    """A `keras.distribution.LayoutMap` sharding attention and MLP kernels.

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with a `model_axis`.
        model_axis: str. Mesh axis the kernels are split over. Defaults to
            `"model"`.

    Example (on a host with 8 devices; JAX):

    ```python
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"])
    distribution = keras.distribution.ModelParallel(
        layout_map=sam3_layout_map(mesh), batch_dim_name="batch")
    keras.distribution.set_distribution(distribution)
    ```
    """
    if model_axis not in device_mesh.axis_names:
        raise ValueError(f"The mesh has axes {device_mesh.axis_names}, not {model_axis!r}.")
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map[COLUMN_PARALLEL] = (None, model_axis)
    layout_map[ROW_PARALLEL] = (model_axis, None)
    return layout_map
