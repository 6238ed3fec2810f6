"""`SAM3TrackerPromptEncoder`: clicks, boxes and mask logits -> prompt embeddings
for the SAM 3 tracker (SAM 2's prompt encoder)."""

import math

import keras
from keras import ops

from keras_sam3.layers.conv import Conv2D
from keras_sam3.layers.embedding import Embedding
from keras_sam3.layers.layer_norm import LayerNormalization


@keras.saving.register_keras_serializable(package="keras_sam3")
class MaskEmbedding(keras.layers.Layer):
    """Mask logits `(B, 4h, 4w, 1)` -> dense embedding `(B, h, w, D)`:
    conv 2x2/2, LN, GELU, conv 2x2/2, LN, GELU, conv 1x1."""

    def __init__(self, hidden_dim, mask_input_channels=16, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.mask_input_channels = mask_input_channels
        self.layer_norm_epsilon = layer_norm_epsilon
        policy = self.dtype_policy
        quarter = mask_input_channels // 4
        self.conv1 = Conv2D(quarter, 2, strides=2, dtype=policy, name="conv1")
        self.layer_norm1 = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="layer_norm1"
        )
        self.conv2 = Conv2D(mask_input_channels, 2, strides=2, dtype=policy, name="conv2")
        self.layer_norm2 = LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="layer_norm2"
        )
        self.conv3 = Conv2D(hidden_dim, 1, dtype=policy, name="conv3")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in (self.conv1, self.layer_norm1, self.conv2, self.layer_norm2, self.conv3):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, masks):
        x = ops.gelu(self.layer_norm1(self.conv1(masks)), approximate=False)
        x = ops.gelu(self.layer_norm2(self.conv2(x)), approximate=False)
        return self.conv3(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "mask_input_channels": self.mask_input_channels,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3TrackerPromptEncoder(keras.layers.Layer):
    """Sparse (points, boxes) and dense (mask) prompt embeddings.

    Coordinates are encoded with random Fourier features: `c = 2 x - 1` for
    `x` in [0, 1], `2 pi (c @ G)` with a fixed Gaussian `G` (2 x D/2), then
    `[sin, cos]` (block-concatenated). Point labels: 1 positive, 0
    negative, -1 "not a point" (its embedding replaces the encoding), -10
    padding (zeros). A box is its two corners (plus the box-corner
    embeddings) and a "not a point" token. With points and no boxes a pad
    point (label -1) is appended, as SAM does.

    Args:
        hidden_dim: int. Defaults to `256`.
        image_size: int. Model input side; coordinates are in its pixels.
            Defaults to `1008`.
        patch_size: int. Defaults to `14` (a 72 x 72 embedding grid).
        mask_input_channels: int. Defaults to `16`.
        num_point_embeddings: int. Defaults to `4`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        points: optional `(B, P, N, 2)` xy in model-input pixels.
        labels: `(B, P, N)` int, with `points`.
        boxes: optional `(B, P, 4)` xyxy in model-input pixels.
        masks: optional `(B, 4h, 4w, 1)` mask logits.

    Returns:
        `(sparse, dense)`: `(B, P, T, D)` tokens and `(B, h, w, D)`.
    """

    def __init__(
        self,
        hidden_dim=256,
        image_size=1008,
        patch_size=14,
        mask_input_channels=16,
        num_point_embeddings=4,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.image_size = image_size
        self.patch_size = patch_size
        self.mask_input_channels = mask_input_channels
        self.num_point_embeddings = num_point_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid_size = image_size // patch_size
        # Clicks and boxes stay float32 until normalized (`embed_points`), so
        # `__call__` must not cast them to a bfloat16 compute dtype first.
        self._convert_input_args = False
        policy = self.dtype_policy
        self.point_embed = Embedding(
            num_point_embeddings, hidden_dim, dtype=policy, name="point_embed"
        )
        self.not_a_point_embed = Embedding(1, hidden_dim, dtype=policy, name="not_a_point_embed")
        self.no_mask_embed = Embedding(1, hidden_dim, dtype=policy, name="no_mask_embed")
        self.mask_embed = MaskEmbedding(
            hidden_dim, mask_input_channels, layer_norm_epsilon, dtype=policy, name="mask_embed"
        )

    def build(self, *args, **kwargs):
        # A fixed random projection: loaded from the checkpoint, never trained.
        self.positional_embedding = self.add_weight(
            name="shared_embedding_positional_embedding",
            shape=(2, self.hidden_dim // 2),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            dtype="float32",  # `fourier_encode` works in float32
        )
        for layer in (self.point_embed, self.not_a_point_embed, self.no_mask_embed):
            layer.build((None,))
        side = 4 * self.grid_size
        self.mask_embed.build((None, side, side, 1))
        self.built = True

    def fourier_encode(self, coords, matrix=None):
        """`(..., 2)` in [0, 1] -> `(..., D)` `[sin, cos]` of `2 pi (2 c - 1) @ G`.

        In float32 whatever the compute dtype, which the result is cast to:
        the angles reach about 30 rad, where bfloat16's step is 0.125 (a
        review measured encodings off by up to 0.16 computed in bfloat16).
        """
        matrix = self.positional_embedding if matrix is None else matrix
        coords = ops.cast(2.0 * ops.cast(coords, "float32") - 1.0, "float32")
        projected = ops.matmul(coords, ops.cast(matrix, "float32"))
        projected = 2.0 * math.pi * projected
        encoded = ops.concatenate([ops.sin(projected), ops.cos(projected)], axis=-1)
        return ops.cast(encoded, self.compute_dtype)

    def image_positional_embeddings(self, matrix=None):
        """`(1, h, w, D)` encodings of the embedding grid's pixel centers (with
        `matrix` instead of this encoder's Fourier matrix if given)."""
        g = self.grid_size
        centers = (ops.cast(ops.arange(g), "float32") + 0.5) / g
        ys, xs = ops.meshgrid(centers, centers, indexing="ij")
        return self.fourier_encode(ops.stack([xs, ys], axis=-1), matrix)[None]

    def _token(self, layer, like):
        # (D,) broadcast to `like`'s shape.
        return ops.broadcast_to(ops.cast(layer.embeddings[0], like.dtype), ops.shape(like))

    def embed_points(self, points, labels, pad):
        # Normalized in float32: in bfloat16 a click at ~1000 px would move by up to 2 px.
        points = ops.cast(points, "float32") + 0.5  # pixel centers
        labels = ops.cast(labels, "int32")
        if pad:
            # (B, P, N, 2) -> (B, P, N + 1, 2): a (0, 0) point labelled -1.
            points = ops.pad(points, ((0, 0), (0, 0), (0, 1), (0, 0)))
            labels = ops.pad(labels, ((0, 0), (0, 0), (0, 1)), constant_values=-1)
        encoded = self.fourier_encode(points / self.image_size)
        label = labels[..., None]
        encoded = ops.where(label == -1, self._token(self.not_a_point_embed, encoded), encoded)
        encoded = ops.where(label == -10, ops.zeros_like(encoded), encoded)
        kind = self.point_embed(ops.maximum(labels, 0))
        return encoded + kind * ops.cast(label >= 0, encoded.dtype)

    def embed_boxes(self, boxes):
        boxes = ops.cast(boxes, "float32") + 0.5  # normalized in float32, as points
        # (B, P, 4) -> (B, P, 2, 2): the two corners.
        corners = ops.reshape(boxes, ops.shape(boxes)[:-1] + (2, 2))
        encoded = self.fourier_encode(corners / self.image_size)
        corner_kinds = ops.cast(self.point_embed.embeddings[2:4], encoded.dtype)  # (2, D)
        encoded = encoded + corner_kinds
        not_a_point = self._token(self.not_a_point_embed, encoded[:, :, :1])
        return ops.concatenate([encoded, not_a_point], axis=2)

    def call(self, points=None, labels=None, boxes=None, masks=None):
        sparse = []
        if points is not None:
            if labels is None:
                raise ValueError("Points need labels (1 positive, 0 negative, -1, -10 padding).")
            sparse.append(self.embed_points(points, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if not sparse:
            raise ValueError("Give points, boxes or both.")
        sparse = ops.concatenate(sparse, axis=2) if len(sparse) > 1 else sparse[0]
        if masks is not None:
            dense = self.mask_embed(masks)
        else:
            g = self.grid_size
            token = ops.cast(self.no_mask_embed.embeddings[0], sparse.dtype)
            dense = ops.broadcast_to(token, (ops.shape(sparse)[0], g, g, self.hidden_dim))
        return sparse, dense

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "mask_input_channels": self.mask_input_channels,
                "num_point_embeddings": self.num_point_embeddings,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
