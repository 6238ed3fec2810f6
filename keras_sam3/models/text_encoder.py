"""`SAM3TextEncoder`: the CLIP text transformer and SAM 3's 1024 -> 256 resizer."""

import keras
from keras import ops

from keras_sam3.layers.attention import Attention
from keras_sam3.layers.dense import Dense
from keras_sam3.layers.embedding import Embedding
from keras_sam3.layers.layer_norm import LayerNormalization
from keras_sam3.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_sam3")
class CLIPTextBlock(keras.layers.Layer):
    """Pre-norm CLIP text block: causal self-attention, then the MLP.

    Args:
        hidden_dim: int. Token width.
        intermediate_dim: int. MLP width.
        num_heads: int. Attention heads.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        activation: str. Defaults to `"gelu"` (exact; SAM 3's CLIP does not
            use quick GELU).
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
        num_heads,
        layer_norm_epsilon=1e-5,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.layer_norm1 = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm1"
        )
        self.self_attn = Attention(
            hidden_dim,
            num_heads,
            output_name="out_proj",
            dtype=self.dtype_policy,
            name="self_attn",
        )
        self.layer_norm2 = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm2"
        )
        self.mlp = MLP(
            hidden_dim,
            intermediate_dim,
            activation=activation,
            dtype=self.dtype_policy,
            name="mlp",
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.layer_norm1.build(input_shape)
        self.self_attn.build(input_shape)
        self.layer_norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, x, attention_mask):
        x = x + self.self_attn(self.layer_norm1(x), attention_mask=attention_mask)
        return x + self.mlp(self.layer_norm2(x))

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3TextEncoder(keras.layers.Layer):
    """SAM 3 text encoder: CLIP text transformer plus a projection of every
    token to the detector width.

    Attention is causal and ignores padded keys. The EOS-pooled CLIP output
    and CLIP's own `text_projection` are not used by SAM 3 and are not built.

    Args:
        vocabulary_size: int. Defaults to `49408`.
        hidden_dim: int. Defaults to `1024`.
        intermediate_dim: int. Defaults to `4096`.
        num_layers: int. Defaults to `24`.
        num_heads: int. Defaults to `16`.
        max_sequence_length: int. Defaults to `32`.
        output_dim: int. Width after the projection. Defaults to `256`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        activation: str. Defaults to `"gelu"` (exact).

    Call arguments:
        token_ids: int `(B, T)`, `T <= max_sequence_length`.
        padding_mask: optional bool or int `(B, T)`, true on real tokens.
            Without it every token counts as valid.

    Returns:
        A dict: `text_features` `(B, T, output_dim)`, `text_mask` bool
        `(B, T)` and `last_hidden_state` `(B, T, hidden_dim)`.

    Example:
    >>> encoder = SAM3TextEncoder(vocabulary_size=100, hidden_dim=32,
    ...     intermediate_dim=64, num_layers=2, num_heads=2, output_dim=16)
    >>> out = encoder(keras.ops.ones((2, 32), "int32"))
    >>> tuple(out["text_features"].shape)
    (2, 32, 16)
    """

    def __init__(
        self,
        vocabulary_size=49408,
        hidden_dim=1024,
        intermediate_dim=4096,
        num_layers=24,
        num_heads=16,
        max_sequence_length=32,
        output_dim=256,
        layer_norm_epsilon=1e-5,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.max_sequence_length = max_sequence_length
        self.output_dim = output_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.token_embedding = Embedding(
            vocabulary_size, hidden_dim, dtype=self.dtype_policy, name="token_embedding"
        )
        self.position_embedding = Embedding(
            max_sequence_length,
            hidden_dim,
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.blocks = [
            CLIPTextBlock(
                hidden_dim,
                intermediate_dim,
                num_heads,
                layer_norm_epsilon=layer_norm_epsilon,
                activation=activation,
                dtype=self.dtype_policy,
                name=f"layers_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_layer_norm = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="final_layer_norm"
        )
        self.text_projection = Dense(
            output_dim, dtype=self.dtype_policy, name="text_projection"
        )

    def build(self, token_ids_shape, padding_mask_shape=None):
        token_ids_shape = tuple(token_ids_shape)
        hidden_shape = token_ids_shape + (self.hidden_dim,)
        self.token_embedding.build(token_ids_shape)
        self.position_embedding.build(token_ids_shape)
        for block in self.blocks:
            block.build(hidden_shape)
        self.final_layer_norm.build(hidden_shape)
        self.text_projection.build(hidden_shape)
        self.built = True

    def call(self, token_ids, padding_mask=None):
        length = token_ids.shape[1]
        if length is not None and length > self.max_sequence_length:
            raise ValueError(
                f"token_ids has {length} tokens; the text encoder holds "
                f"{self.max_sequence_length} positions."
            )
        x = self.token_embedding(token_ids)
        positions = ops.arange(ops.shape(token_ids)[1])
        x = x + ops.expand_dims(self.position_embedding(positions), 0)

        # (T, T) causal, and (B, 1, 1, T) padded keys -> (B, 1, T, T).
        causal = ops.greater_equal(positions[:, None], positions[None, :])
        attention_mask = causal[None, None]
        if padding_mask is None:
            text_mask = ops.ones(ops.shape(token_ids), "bool")
        else:
            text_mask = ops.cast(padding_mask, "bool")
            attention_mask = ops.logical_and(
                attention_mask, text_mask[:, None, None, :]
            )
        for block in self.blocks:
            x = block(x, attention_mask=attention_mask)
        x = self.final_layer_norm(x)
        return {
            "text_features": self.text_projection(x),
            "text_mask": text_mask,
            "last_hidden_state": x,
        }

    def compute_output_spec(self, token_ids, padding_mask=None):
        # Inputs of unknown length (the backbone's) are not traced with a
        # stand-in length, which could exceed `max_sequence_length`.
        shape = tuple(token_ids.shape)
        return {
            "text_features": keras.KerasTensor(shape + (self.output_dim,), self.compute_dtype),
            "text_mask": keras.KerasTensor(shape, "bool"),
            "last_hidden_state": keras.KerasTensor(shape + (self.hidden_dim,), self.compute_dtype),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "max_sequence_length": self.max_sequence_length,
                "output_dim": self.output_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
            }
        )
        return config
