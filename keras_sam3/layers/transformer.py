import keras

from keras_sam3.layers.attention import Attention
from keras_sam3.layers.direct import dropout
from keras_sam3.layers.layer_norm import layer_norm
from keras_sam3.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_sam3")
class PreNormFusionBlock(keras.layers.Layer):
    """Pre-norm block: self-attention, cross-attention to a memory, MLP.

    ```
    y = LN1(x);  x += SelfAttn(q = k = y + x_pos, v = y, mask = self_mask)
    y = LN2(x);  x += CrossAttn(q = y, k = memory + memory_pos, v = memory,
                                mask = cross_mask)
    x += MLP(LN3(x))
    ```
    The geometry encoder (prompts attend to the image) and the DETR encoder
    (image attends to the prompts) are both stacks of this block.

    Args:
        hidden_dim: int. Token width.
        intermediate_dim: int. MLP width.
        num_heads: int. Attention heads.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        activation: str. MLP activation. Defaults to `"relu"`.
        dropout_rate: float. Dropout on each residual branch in training.
            Defaults to `0.1`.

    Call arguments:
        x: `(B, N, D)`.
        memory: `(B, M, D)`.
        x_pos, memory_pos: optional position encodings added to the
            self-attention queries / keys and to the cross-attention keys.
        self_mask, cross_mask: optional bool masks broadcastable to
            `(B, h, N, N)` and `(B, h, N, M)`; True attends.
        self_attention_done: bool. `x` is already the output of
            `self_attention_step`; start at the cross-attention.
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        num_heads,
        layer_norm_epsilon=1e-5,
        activation="relu",
        dropout_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.dropout_rate = dropout_rate


        self.layer_norm1 = layer_norm("layer_norm1", layer_norm_epsilon, self.dtype_policy)
        self.self_attn = Attention(hidden_dim, num_heads, dtype=self.dtype_policy, name="self_attn")
        self.layer_norm2 = layer_norm("layer_norm2", layer_norm_epsilon, self.dtype_policy)
        self.cross_attn = Attention(hidden_dim, num_heads, dtype=self.dtype_policy, name="cross_attn")
        self.layer_norm3 = layer_norm("layer_norm3", layer_norm_epsilon, self.dtype_policy)
        self.mlp = MLP(
            hidden_dim, intermediate_dim, activation=activation, dtype=self.dtype_policy, name="mlp"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, x_shape, memory_shape=None, *args, **kwargs):
        x_shape = tuple(x_shape)
        memory_shape = tuple(memory_shape) if memory_shape else x_shape
        self.layer_norm1.build(x_shape)
        self.self_attn.build(x_shape)
        self.layer_norm2.build(x_shape)
        self.cross_attn.build(x_shape, memory_shape)
        self.layer_norm3.build(x_shape)
        self.mlp.build(x_shape)
        self.built = True

    def self_attention_step(self, x, x_pos=None, self_mask=None, training=None):
        """The first residual step alone: `x + SelfAttn(LN1(x))`. It does not
        read the memory, so a caller can run it once for several memories
        and pass the result with `self_attention_done=True`."""
        y = self.layer_norm1(x)
        qk = y if x_pos is None else y + x_pos
        y = self.self_attn(qk, qk, y, attention_mask=self_mask)
        return x + dropout(self.dropout, y, training)

    def call(
        self,
        x,
        memory,
        x_pos=None,
        memory_pos=None,
        self_mask=None,
        cross_mask=None,
        training=None,
        self_attention_done=False,
    ):
        if not self_attention_done:
            x = self.self_attention_step(x, x_pos, self_mask, training=training)
        y = self.layer_norm2(x)
        key = memory if memory_pos is None else memory + memory_pos
        y = self.cross_attn(y, key, memory, attention_mask=cross_mask)
        x = x + dropout(self.dropout, y, training)
        return x + dropout(self.dropout, self.mlp(self.layer_norm3(x)), training)

    def compute_output_shape(self, x_shape, *args, **kwargs):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
                "dropout_rate": self.dropout_rate,
            }
        )
        return config
