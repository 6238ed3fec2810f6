import keras

from keras_sam3.layers.initializers import InPlaceInitializers
from keras_sam3.ops.conv import conv2d
from keras_sam3.ops.conv import conv2d_transpose


@keras.saving.register_keras_serializable(package="keras_sam3")
class Conv2D(InPlaceInitializers, keras.layers.Conv2D):
    """`keras.layers.Conv2D` (channels last) whose convolution and bias
    run as one op without layout copies (`keras_sam3.ops.conv2d`).

    Same variables and configuration as `keras.layers.Conv2D`, and the same
    class name (Keras names layers held in lists by their class in weight
    files; another name would break saved presets).

    Example:
    >>> tuple(Conv2D(4, 3, padding="same")(keras.ops.ones((1, 8, 8, 2))).shape)
    (1, 8, 8, 4)
    """

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        x = conv2d(inputs, self.kernel, self.bias, self.strides, self.padding, self.dilation_rate)
        return x if self.activation is None else self.activation(x)


@keras.saving.register_keras_serializable(package="keras_sam3")
class Conv2DTranspose(InPlaceInitializers, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` (channels last) with the bias folded
    in (`keras_sam3.ops.conv2d_transpose`).

    Example:
    >>> tuple(Conv2DTranspose(4, 2, strides=2)(keras.ops.ones((1, 8, 8, 2))).shape)
    (1, 16, 16, 4)
    """

    def call(self, inputs):
        if self.data_format != "channels_last" or self.output_padding is not None or self.dilation_rate != (1, 1):
            return super().call(inputs)
        x = conv2d_transpose(inputs, self.kernel, self.bias, self.strides, self.padding)
        return x if self.activation is None else self.activation(x)
