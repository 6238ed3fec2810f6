"""`SAM3Tracker`: the SAM 3 tracker on single images (points, boxes, masks)."""

import keras
from keras import ops

from keras_sam3.layers.unconverted_inputs import UnconvertedInputs


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3Tracker(UnconvertedInputs, keras.layers.Layer):
    """Promptable visual segmentation with SAM 3's tracker heads.

    The image runs through the ViT and the tracker's own FPN neck (levels
    0-2; the 36 x 36 level is not used); levels 0 and 1 are projected for
    the mask decoder's upscaling, level 2 is the image embedding. With no
    memory (single images) Meta's model adds its `no_memory_embedding` to
    that embedding; the reference `transformers` model adds it to the
    dropped 36 x 36 level, so there it has no effect (spec 15.3).
    `add_no_memory_embedding` picks Meta's (True, default) or the
    reference's (False) behaviour.

    Args:
        vision_encoder: `SAM3VisionEncoder` (its ViT may be shared with the
            concept model; its neck is the tracker's).
        prompt_encoder: `SAM3TrackerPromptEncoder`.
        mask_decoder: `SAM3TrackerMaskDecoder`.
        add_no_memory_embedding: bool. Defaults to `True`.

    Call arguments:
        images: `(B, S, S, 3)` in [-1, 1].
        points: optional `(B, P, N, 2)` xy in model-input pixels, with
            `labels` `(B, P, N)` (1, 0, -1, -10; default all 1).
        boxes: optional `(B, P, 4)` xyxy in model-input pixels.
        masks: optional `(B, 4h, 4w, 1)` mask logits (a previous round's).
        multimask_output: bool. Three masks per prompt, or one.

    Returns:
        A dict: `masks` `(B, P, K, 4h, 4w)` logits, `iou_scores`
        `(B, P, K)`, `object_score_logits` `(B, P, 1)`.
    """

    def __init__(self, vision_encoder, prompt_encoder, mask_decoder, add_no_memory_embedding=True, **kwargs):
        super().__init__(**kwargs)
        # Clicks and boxes reach the prompt encoder in float32 (it normalizes
        # them first; `UnconvertedInputs`); the vision encoder casts the images.
        self.vision_encoder = vision_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.add_no_memory_embedding = add_no_memory_embedding

    def build(self, images_shape=None, *args, **kwargs):
        d = self.prompt_encoder.hidden_dim
        size = self.prompt_encoder.image_size
        if not self.vision_encoder.built:
            self.vision_encoder.build((None, size, size, 3))
        # Components restored from a config arrive built (their build config).
        if not self.prompt_encoder.built:
            self.prompt_encoder.build()
        if not self.mask_decoder.built:
            self.mask_decoder.build()
        self.no_memory_embedding = self.add_weight(
            name="no_memory_embedding", shape=(1, 1, d), initializer="zeros"
        )
        # The image grid's Fourier matrix: the checkpoint stores it apart from
        # the prompt encoder's (the same values in facebook/sam3).
        self.image_positional_embedding = self.add_weight(
            name="shared_image_embedding_positional_embedding",
            shape=(2, d // 2),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            dtype="float32",  # `fourier_encode` works in float32
        )
        self.built = True

    def encode(self, images):
        """Image features for `decode`: `image` `(B, h, w, D)` and the projected
        high-resolution levels."""
        return self.encode_trunk(self.vision_encoder.backbone(images))

    def encode_trunk(self, trunk):
        """`encode` from the ViT's output `(B, h, w, C)`, e.g. one the concept
        model already computed with a shared ViT."""
        vision = self.vision_encoder.neck(trunk)
        image = vision["fpn_hidden_states_2"]
        if self.add_no_memory_embedding:
            image = image + ops.cast(self.no_memory_embedding, image.dtype)[None]
        high_resolution = self.mask_decoder.project_high_resolution(
            vision["fpn_hidden_states_0"], vision["fpn_hidden_states_1"]
        )
        return {"image": image, "high_resolution": high_resolution}

    def decode(self, features, points=None, labels=None, boxes=None, masks=None, multimask_output=True):
        """Masks for prompts on encoded images (no image encoder run)."""
        image = features["image"]
        if points is not None and labels is None:
            labels = ops.ones(ops.shape(points)[:-1], "int32")
        if points is None and boxes is None:
            # No prompt: one "not a point" per image, as the reference does.
            points = ops.zeros((ops.shape(image)[0], 1, 1, 2), image.dtype)
            labels = -ops.ones((ops.shape(image)[0], 1, 1), "int32")
        if points is not None and boxes is not None and points.shape[1] != boxes.shape[1]:
            raise ValueError(
                f"Points and boxes must describe the same prompts: {points.shape[1]} point "
                f"groups but {boxes.shape[1]} boxes."
            )
        if masks is not None:
            expected = 4 * self.prompt_encoder.grid_size
            if tuple(masks.shape[1:3]) != (expected, expected):
                raise ValueError(
                    f"Mask prompts are ({expected}, {expected}) logits (a previous low-resolution "
                    f"mask); got shape {tuple(masks.shape)}."
                )
        sparse, dense = self.prompt_encoder(points=points, labels=labels, boxes=boxes, masks=masks)
        return self.mask_decoder(
            image,
            self.prompt_encoder.image_positional_embeddings(self.image_positional_embedding),
            sparse,
            dense,
            features["high_resolution"],
            multimask_output=multimask_output,
        )

    def call(self, images, points=None, labels=None, boxes=None, masks=None, multimask_output=True):
        return self.decode(self.encode(images), points, labels, boxes, masks, multimask_output)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vision_encoder": keras.layers.serialize(self.vision_encoder),
                "prompt_encoder": keras.layers.serialize(self.prompt_encoder),
                "mask_decoder": keras.layers.serialize(self.mask_decoder),
                "add_no_memory_embedding": self.add_no_memory_embedding,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("vision_encoder", "prompt_encoder", "mask_decoder"):
            config[name] = keras.layers.deserialize(config[name])
        return cls(**config)
