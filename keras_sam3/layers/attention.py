import keras
from keras import ops

from keras_sam3.layers.dense import Dense
from keras_sam3.layers.rope import apply_rope
from keras_sam3.ops.attention import dot_product_attention


@keras.saving.register_keras_serializable(package="keras_sam3")
class Attention(keras.layers.Layer):
    """Multi-head attention used by every SAM 3 component.

    One layer for self- and cross-attention: separate `q_proj`, `k_proj`,
    `v_proj` and an output projection, optional 2-D RoPE on queries and keys,
    and a boolean mask and an additive bias folded into a single
    `keras.ops.dot_product_attention` call (in query chunks where its logits
    would be large, `keras_sam3.ops.dot_product_attention`).

    Args:
        hidden_dim: int. Width of the output (and, by default, of the inner
            projections).
        num_heads: int. Number of attention heads.
        inner_dim: int, optional. Width of the q/k/v projections; SAM's
            two-way transformer uses `hidden_dim // downsample_rate`.
            Defaults to `hidden_dim`.
        use_bias: bool. Whether the projections carry a bias. Defaults to
            `True`.
        output_name: str. Name of the output projection, so weights keep
            the reference names (`"o_proj"` or CLIP's `"out_proj"`).

    Call arguments:
        query: `(B, Tq, Dq)`.
        key: `(B, Tk, Dk)`, defaults to `query`.
        value: `(B, Tk, Dv)`, defaults to `key`.
        attention_mask: bool, broadcastable to `(B, h, Tq, Tk)`; True attends.
        attention_bias: float, broadcastable to `(B, h, Tq, Tk)`; added to
            the scaled logits.
        rope: optional `(cos, sin)` pair, each `(Tq, d)`, applied to queries
            and keys in float32 (self-attention only).

    Example:
    >>> layer = Attention(hidden_dim=16, num_heads=2)
    >>> x = keras.random.normal((1, 5, 16))
    >>> tuple(layer(x).shape)
    (1, 5, 16)
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        inner_dim=None,
        use_bias=True,
        output_name="o_proj",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.inner_dim = inner_dim or hidden_dim
        self.use_bias = use_bias
        self.output_name = output_name
        if self.inner_dim % num_heads:
            raise ValueError(
                f"inner_dim={self.inner_dim} is not divisible by "
                f"num_heads={num_heads}."
            )
        self.head_dim = self.inner_dim // num_heads

        def dense(width, name):
            return Dense(
                width, use_bias=use_bias, dtype=self.dtype_policy, name=name
            )

        self.q_proj = dense(self.inner_dim, "q_proj")
        self.k_proj = dense(self.inner_dim, "k_proj")
        self.v_proj = dense(self.inner_dim, "v_proj")
        self.o_proj = dense(hidden_dim, output_name)

    def build(self, query_shape, key_shape=None, value_shape=None):
        query_shape = tuple(query_shape)
        key_shape = tuple(key_shape) if key_shape else query_shape
        value_shape = tuple(value_shape) if value_shape else key_shape
        self.q_proj.build(query_shape)
        self.k_proj.build(key_shape)
        self.v_proj.build(value_shape)
        self.o_proj.build(query_shape[:-1] + (self.inner_dim,))
        self.built = True

    def call(
        self,
        query,
        key=None,
        value=None,
        attention_mask=None,
        attention_bias=None,
        rope=None,
    ):
        key = query if key is None else key
        value = key if value is None else value
        h, d = self.num_heads, self.head_dim

        def split_heads(x):
            # (B, T, h*d) -> (B, T, h, d)
            return ops.reshape(x, ops.shape(x)[:-1] + (h, d))

        q = split_heads(self.q_proj(query))
        k = split_heads(self.k_proj(key))
        v = split_heads(self.v_proj(value))
        if rope is not None:
            # RoPE writes q and k head-first, (B, T, h, d) -> (B, h, T, d):
            # the layout attention kernels read, so PyTorch's attention no
            # longer copies them (6% of the ViT's time at 1008 px); back as
            # a view for the call below.
            def rotated(x):
                x = apply_rope(ops.transpose(x, (0, 2, 1, 3)), *rope, heads_first=True)
                return ops.transpose(x, (0, 2, 1, 3))

            q, k = rotated(q), rotated(k)

        mask, bias = attention_mask, attention_bias
        if mask is not None and bias is not None:
            # Backends take one of the two: fold the mask into the bias.
            bias = ops.where(mask, bias, _large_negative(bias.dtype))
            mask = None
        if bias is not None:
            bias = ops.cast(bias, q.dtype)
        # Chunked over queries where the logits would be large (JAX, TF).
        x = dot_product_attention(q, k, v, bias=bias, mask=mask, scale=d**-0.5)
        # (B, Tq, h, d) -> (B, Tq, h*d)
        x = ops.reshape(x, ops.shape(x)[:-2] + (h * d,))
        return self.o_proj(x)

    def compute_output_shape(self, query_shape, *args, **kwargs):
        return tuple(query_shape)[:-1] + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "inner_dim": self.inner_dim,
                "use_bias": self.use_bias,
                "output_name": self.output_name,
            }
        )
        return config


def _large_negative(dtype):
    # Finite, so a fully masked row gives a uniform average instead of NaN.
    return -65000.0 if "float16" == keras.backend.standardize_dtype(dtype) else -1e9
