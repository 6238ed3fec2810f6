"""`SAM3DetrEncoder`: image tokens fused with the prompt (the reference's
`Sam3DetrEncoder`, Meta's `TransformerEncoderFusion`)."""

import keras

from keras_sam3.layers.transformer import PreNormFusionBlock


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3DetrEncoder(keras.layers.Layer):
    """Pre-norm layers over the image tokens (one FPN level): self-attention
    with the sine position encoding on queries and keys, then
    cross-attention to the prompt tokens (no positions, padded prompt
    tokens masked), then the MLP. No final norm.

    Args:
        hidden_dim: int. Defaults to `256`.
        num_layers: int. Defaults to `6`.
        num_heads: int. Defaults to `8`.
        intermediate_dim: int. Defaults to `2048`.
        layer_norm_epsilon: float. Defaults to `1e-5`.
        dropout_rate: float. Training-only dropout. Defaults to `0.1`.

    Call arguments:
        image_tokens: `(B, N, D)`.
        image_pos: `(1 or B, N, D)`.
        prompt: `(B, L, D)`.
        prompt_mask: bool `(B, L)`.
        image_encoded: bool. `image_tokens` come from `encode_image`.

    Returns:
        `(B, N, D)` the encoder memory.
    """

    def __init__(
        self,
        hidden_dim=256,
        num_layers=6,
        num_heads=8,
        intermediate_dim=2048,
        layer_norm_epsilon=1e-5,
        dropout_rate=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout_rate = dropout_rate
        self.encoder_layers = [
            PreNormFusionBlock(
                hidden_dim,
                intermediate_dim,
                num_heads,
                layer_norm_epsilon=layer_norm_epsilon,
                activation="relu",
                dropout_rate=dropout_rate,
                dtype=self.dtype_policy,
                name=f"layers_{i}",
            )
            for i in range(num_layers)
        ]

    def build(self, image_tokens_shape, *args, **kwargs):
        tokens = (None, None, self.hidden_dim)
        for layer in self.encoder_layers:
            layer.build(tokens, tokens)
        self.built = True

    def encode_image(self, image_tokens, image_pos, training=None):
        """The part that reads no prompt: the first layer's self-attention
        (the prompt enters at its cross-attention). Run it once per image
        and pass the result to `call(..., image_encoded=True)` for each
        prompt.

        Returns:
            `(B, N, D)`.
        """
        return self.encoder_layers[0].self_attention_step(image_tokens, image_pos, training=training)

    def call(self, image_tokens, image_pos, prompt, prompt_mask, training=None, image_encoded=False):
        x = image_tokens
        cross_mask = prompt_mask[:, None, None, :]  # keys: (B, 1, 1, L)
        for i, layer in enumerate(self.encoder_layers):
            x = layer(
                x,
                prompt,
                x_pos=image_pos,
                cross_mask=cross_mask,
                training=training,
                self_attention_done=image_encoded and i == 0,
            )
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout_rate": self.dropout_rate,
            }
        )
        return config
