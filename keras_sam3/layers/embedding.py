import keras

from keras_sam3.layers.initializers import InPlaceInitializers


@keras.saving.register_keras_serializable(package="keras_sam3")
class Embedding(InPlaceInitializers, keras.layers.Embedding):
    """`keras.layers.Embedding` whose table is drawn without temporaries on
    PyTorch (`layers.initializers`; the text encoder's 49408 x 1024 table is
    the model's largest variable). Same variables, values, configuration
    and class name as Keras' layer.

    Example:
    >>> tuple(Embedding(10, 4)(keras.ops.array([[1, 2]])).shape)
    (1, 2, 4)
    """
