"""`SAM3DotProductScoring`: query logits against the pooled prompt."""

import keras
from keras import ops

from keras_sam3.layers.dense import Dense
from keras_sam3.layers.direct import dropout
from keras_sam3.layers.layer_norm import LayerNormalization
from keras_sam3.layers.mlp import StackedMLP


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3DotProductScoring(keras.layers.Layer):
    """Classification logits as scaled dot products of projected queries and
    the projected mean of the prompt tokens.

    `t = LN(prompt + MLP(prompt))`, masked mean over valid tokens (text,
    boxes and CLS alike), then `logit = <query_proj(q), text_proj(t)> / sqrt(D)`
    clamped to `[-clamp, clamp]`.

    Args:
        hidden_dim: int. Defaults to `256`.
        intermediate_dim: int. Prompt MLP width. Defaults to `2048`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        clamp: float. Defaults to `12.0`.
        dropout_rate: float. Training-only dropout on the MLP. Defaults to
            `0.1`.

    Call arguments:
        queries: `(B, ..., Q, D)` decoder queries (any number of layer axes).
        prompt: `(B, L, D)`.
        prompt_mask: bool `(B, L)`.

    Returns:
        `(B, ..., Q)` logits.
    """

    def __init__(
        self,
        hidden_dim=256,
        intermediate_dim=2048,
        layer_norm_epsilon=1e-5,
        clamp=12.0,
        dropout_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.clamp = clamp
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy
        self.text_mlp = StackedMLP(
            intermediate_dim, hidden_dim, num_layers=2, dtype=policy, name="text_mlp"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=policy)
        self.text_mlp_out_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="text_mlp_out_norm"
        )
        self.text_proj = Dense(hidden_dim, dtype=policy, name="text_proj")
        self.query_proj = Dense(hidden_dim, dtype=policy, name="query_proj")

    def build(self, *args, **kwargs):
        tokens = (None, None, self.hidden_dim)
        self.text_mlp.build(tokens)
        self.text_mlp_out_norm.build(tokens)
        self.text_proj.build((None, self.hidden_dim))
        self.query_proj.build(tokens)
        self.built = True

    def call(self, queries, prompt, prompt_mask, training=None):
        t = prompt + dropout(self.dropout, self.text_mlp(prompt), training)
        t = self.text_mlp_out_norm(t)
        valid = ops.cast(prompt_mask, t.dtype)[..., None]  # (B, L, 1)
        pooled = ops.sum(t * valid, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1.0)
        text = self.text_proj(pooled)  # (B, D)
        q = self.query_proj(queries)  # (B, ..., Q, D)
        # Broadcast the prompt vector over every axis between B and Q.
        text = ops.reshape(text, (-1,) + (1,) * (len(q.shape) - 2) + (self.hidden_dim,))
        logits = ops.sum(q * text, axis=-1) / (self.hidden_dim**0.5)
        return ops.clip(logits, -self.clamp, self.clamp)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "clamp": self.clamp,
                "dropout_rate": self.dropout_rate,
            }
        )
        return config
