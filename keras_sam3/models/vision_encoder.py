"""`SAM3VisionEncoder`: the RoPE ViT trunk followed by the FPN neck."""

import keras

from keras_sam3.models.fpn_neck import SAM3FPNNeck
from keras_sam3.models.vit import SAM3ViT


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3VisionEncoder(keras.layers.Layer):
    """SAM 3 image encoder: `SAM3ViT` trunk and the detector's FPN neck.

    The defaults are the `facebook/sam3` architecture. Any image size works
    whose side is a multiple of `patch_size`; grids that are not a multiple
    of `window_size` are padded inside the windowed layers, as the reference
    does.

    Args:
        hidden_dim: int. ViT width. Defaults to `1024`.
        intermediate_dim: int. ViT MLP width. Defaults to `4736`.
        num_layers: int. ViT depth. Defaults to `32`.
        num_heads: int. ViT heads. Defaults to `16`.
        patch_size: int. Defaults to `14`.
        pretrain_image_size: int. Size of the position-embedding grid in
            pixels. Defaults to `336`.
        window_size: int. Defaults to `24`.
        global_attn_indexes: tuple of int. Defaults to `(7, 15, 23, 31)`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        rope_theta: float. Defaults to `10000.0`.
        fpn_hidden_dim: int. Defaults to `256`.
        scale_factors: tuple of float. Defaults to `(4.0, 2.0, 1.0, 0.5)`.
        vit: optional `SAM3ViT` to use instead of building one, so that two
            encoders (the detector's and the tracker's necks) share one trunk
            and its weights. The trunk arguments above must describe it.

    Call arguments:
        images: `(B, H, W, 3)` float, scaled to [-1, 1].

    Returns:
        A dict: `last_hidden_state` `(B, H/14, W/14, hidden_dim)` and, for
        every level `i`, `fpn_hidden_states_{i}` `(B, H_i, W_i, 256)` and
        `fpn_position_encoding_{i}` `(1, H_i, W_i, 256)`.

    Example:
    >>> encoder = SAM3VisionEncoder(hidden_dim=32, intermediate_dim=64,
    ...     num_layers=2, num_heads=2, pretrain_image_size=56, window_size=4,
    ...     global_attn_indexes=(1,), fpn_hidden_dim=16)
    >>> out = encoder(keras.ops.zeros((1, 112, 112, 3)))
    >>> tuple(out["fpn_hidden_states_0"].shape)
    (1, 32, 32, 16)
    """

    def __init__(
        self,
        hidden_dim=1024,
        intermediate_dim=4736,
        num_layers=32,
        num_heads=16,
        patch_size=14,
        pretrain_image_size=336,
        window_size=24,
        global_attn_indexes=(7, 15, 23, 31),
        layer_norm_epsilon=1e-6,
        rope_theta=10000.0,
        fpn_hidden_dim=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        vit=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = vit or SAM3ViT(
            hidden_dim=hidden_dim,
            intermediate_dim=intermediate_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            patch_size=patch_size,
            pretrain_image_size=pretrain_image_size,
            window_size=window_size,
            global_attn_indexes=global_attn_indexes,
            layer_norm_epsilon=layer_norm_epsilon,
            rope_theta=rope_theta,
            dtype=self.dtype_policy,
            name="backbone",
        )
        self.neck = SAM3FPNNeck(
            hidden_dim=fpn_hidden_dim,
            input_dim=hidden_dim,
            scale_factors=scale_factors,
            dtype=self.dtype_policy,
            name="neck",
        )
        self._config = {
            "hidden_dim": hidden_dim,
            "intermediate_dim": intermediate_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "patch_size": patch_size,
            "pretrain_image_size": pretrain_image_size,
            "window_size": window_size,
            "global_attn_indexes": list(global_attn_indexes),
            "layer_norm_epsilon": layer_norm_epsilon,
            "rope_theta": rope_theta,
            "fpn_hidden_dim": fpn_hidden_dim,
            "scale_factors": [float(s) for s in scale_factors],
        }

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.neck.build(self.backbone.compute_output_shape(input_shape))
        self.built = True

    def call(self, images):
        x = self.backbone(images)
        return {"last_hidden_state": x, **self.neck(x)}

    def compute_output_shape(self, input_shape):
        trunk = self.backbone.compute_output_shape(tuple(input_shape))
        return {"last_hidden_state": trunk, **self.neck.compute_output_shape(trunk)}

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config
