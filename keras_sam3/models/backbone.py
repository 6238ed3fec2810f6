"""`SAM3Backbone`: the promptable concept segmentation model, functional."""

import contextvars
import os

import keras
from keras import ops
from keras_hub.models import Backbone

from keras_sam3.ops.boxes import box_cxcywh_to_xyxy

PAD_LABEL = -10

# A dtype asked of `from_preset`, for `from_config` to give every component
# (each restores its own saved policy otherwise).
_PRESET_DTYPE = contextvars.ContextVar("sam3_backbone_preset_dtype", default=None)

_COMPONENTS = (
    "vision_encoder",
    "text_encoder",
    "geometry_encoder",
    "detr_encoder",
    "detr_decoder",
    "scoring",
    "mask_decoder",
)


# What the prompt head reads of an encoded image: FPN level 2, the DETR
# encoder's first self-attention over it, and the pixel decoder's
# convolutions of FPN levels 0 and 1 (they run before any prompt).
IMAGE_LEVELS = ("fpn_hidden_states_2",)
# What `prompt_head(..., one_to_many=True)` adds: the one-to-many queries'
# per-layer logits `(B, L, Q)` and xyxy boxes `(B, L, Q, 4)`, and (unless
# `one_to_many_masks=False`) their masks `(B, Q, h, w)`.
ONE_TO_MANY_OUTPUTS = ("all_pred_logits_o2m", "all_pred_boxes_o2m", "pred_masks_o2m")
ENCODED_TOKENS = "detr_encoder_image_tokens"
CONVOLVED_SKIPS = ("mask_decoder_convolved_skip_0", "mask_decoder_convolved_skip_1")


# The image features the prompt head reads per prompt (position encodings
# are `(1, H, W, D)` and broadcast).
PROMPTED_LEVELS = ("fpn_hidden_states_0", "fpn_hidden_states_1", "fpn_hidden_states_2")


class ImagesForPrompts(keras.layers.Layer):
    """Each image's features repeated for its prompts.

    With `N` images and `N * K` prompts, prompts `K i` to `K i + K - 1` read
    image `i`: each of the list's `(N, ...)` features becomes `(N * K, ...)`,
    and in training the gradients of the `K` copies add up in the image's.
    With as many images as prompts it returns the features as they are. The
    counts are checked once for the whole list.
    """

    def call(self, features, prompts):
        features = list(features)
        images, count = ops.shape(features[0])[0], ops.shape(prompts)[0]
        problem = (
            "each image needs the same number of prompts (consecutive in the batch), "
            "or give one image per prompt"
        )
        if isinstance(images, int) and isinstance(count, int):
            if images == count:
                return features
            if images == 0 or count % images:
                raise ValueError(f"{count} prompts on {images} images: {problem}.")
        elif keras.backend.backend() == "tensorflow":
            # A batch size unknown when traced (TensorFlow retraced with
            # `reduce_retracing`): checked when it runs, and no copy when
            # the counts are equal.
            import tensorflow as tf

            images = tf.cast(images, "int32")
            count = tf.cast(count, "int32")
            per_image = count // tf.maximum(images, 1)
            fits = tf.logical_or(
                tf.equal(images, count), tf.logical_and(images > 0, tf.equal(per_image * images, count))
            )
            with tf.control_dependencies([tf.debugging.assert_equal(fits, True, message=problem)]):
                return tf.cond(
                    tf.equal(images, count),
                    lambda: [tf.identity(f) for f in features],
                    lambda: [tf.repeat(f, per_image, axis=0) for f in features],
                )
        return [ops.repeat(f, count // images, axis=0) for f in features]

    def compute_output_shape(self, features_shape, prompts_shape):
        return [(prompts_shape[0], *shape[1:]) for shape in features_shape]


def _level2_tokens(vision):
    """FPN level 2 and its position encoding as token sequences."""
    height, width, dim = vision["fpn_hidden_states_2"].shape[1:]
    # (B, H, W, D) -> (B, N, D)
    return tuple(
        ops.reshape(vision[k], (-1, height * width, dim))
        for k in ("fpn_hidden_states_2", "fpn_position_encoding_2")
    )


def image_encoding(components, vision):
    """The prompt-independent part of the model for a batch of images.

    Args:
        components: object with the backbone's component attributes.
        vision: dict from `SAM3VisionEncoder`.

    Returns:
        dict: the `IMAGE_LEVELS` of `vision`, `ENCODED_TOKENS` `(B, N, D)` and
        the `CONVOLVED_SKIPS` (each the shape of FPN level 0, 1): what
        `prompt_head(..., encoded_tokens=..., convolved_skips=...)` takes for
        any prompt.
    """
    tokens, tokens_pos = _level2_tokens(vision)
    encoding = {k: vision[k] for k in IMAGE_LEVELS}
    encoding[ENCODED_TOKENS] = components.detr_encoder.encode_image(tokens, tokens_pos)
    skips = components.mask_decoder.convolve_skips(
        [vision["fpn_hidden_states_0"], vision["fpn_hidden_states_1"]]
    )
    encoding.update(zip(CONVOLVED_SKIPS, skips))
    return encoding


def prompt_head(
    components,
    vision,
    text_features,
    text_mask,
    boxes,
    box_labels,
    training=None,
    encoded_tokens=None,
    convolved_skips=None,
    one_to_many=False,
    one_to_many_masks=True,
):
    """Everything after the encoders: prompt assembly, DETR, scoring, masks.

    Args:
        components: object with the backbone's component attributes.
        vision: dict from `SAM3VisionEncoder` (levels 0-2 are used; level 2
            alone with `convolved_skips`).
        text_features: `(B, T, D)`; text_mask: bool `(B, T)`.
        boxes: `(B, Nb, 4)` normalized cxcywh; box_labels: int `(B, Nb)`,
            1 positive, 0 negative, -10 padding.
        encoded_tokens: optional `(B, N, D)` from `image_encoding`; the DETR
            encoder then skips the step that produced them.
        convolved_skips: optional list, the `CONVOLVED_SKIPS` of
            `image_encoding`; the pixel decoder then reads them instead of
            FPN levels 0 and 1.
        one_to_many: bool. Also run the queries of Meta's one-to-many (DAC)
            training branch (`SAM3DetrDecoder(self_attention=False)`) and
            add their `ONE_TO_MANY_OUTPUTS`.
        one_to_many_masks: bool. With `one_to_many`, also their masks
            (`pred_masks_o2m`, as Meta's model predicts them).

    Returns:
        The backbone's output dict.
    """
    features = vision["fpn_hidden_states_2"]
    position = vision["fpn_position_encoding_2"]
    height, width, dim = features.shape[1:]
    box_mask = ops.not_equal(box_labels, PAD_LABEL)
    labels = ops.where(box_mask, box_labels, 0)
    geometry = components.geometry_encoder(
        boxes, labels, box_mask, features, position, training=training
    )
    prompt = ops.concatenate([text_features, geometry["features"]], axis=1)
    prompt_mask = ops.concatenate([ops.cast(text_mask, "bool"), geometry["mask"]], axis=1)

    tokens, tokens_pos = _level2_tokens(vision)
    if encoded_tokens is None:
        memory = components.detr_encoder(tokens, tokens_pos, prompt, prompt_mask, training=training)
    else:
        memory = components.detr_encoder(
            encoded_tokens, tokens_pos, prompt, prompt_mask, training=training, image_encoded=True
        )
    # (B, N, D) -> (B, H, W, D): the grid travels with the tensor.
    memory = ops.reshape(memory, (-1, height, width, dim))
    decoded = components.detr_decoder(memory, position, prompt, prompt_mask, training=training)
    queries = decoded["queries"]  # (B, L, Q, D)
    num_queries = queries.shape[2]
    if one_to_many:
        many = components.detr_decoder(
            memory, position, prompt, prompt_mask, training=training, self_attention=False
        )
        # Scored and (with `one_to_many_masks`) masked in one run with the
        # one-to-one queries, as Meta's model does: each query's score and
        # mask read the prompt and the pixels, never another query.
        queries = ops.concatenate([queries, many["queries"]], axis=2)  # (B, L, 2Q, D)
    all_logits = components.scoring(queries, prompt, prompt_mask, training=training)
    logits = all_logits[:, :, :num_queries] if one_to_many else all_logits
    boxes_xyxy = box_cxcywh_to_xyxy(decoded["boxes"])
    if convolved_skips is None:
        skips = [vision["fpn_hidden_states_0"], vision["fpn_hidden_states_1"]]
    else:
        skips = list(convolved_skips)
    mask_queries = queries[:, -1] if one_to_many_masks or not one_to_many else queries[:, -1, :num_queries]
    masks = components.mask_decoder(
        mask_queries,
        memory,
        skips=skips,
        prompt=prompt,
        prompt_mask=prompt_mask,
        training=training,
        skips_convolved=convolved_skips is not None,
    )
    pred_masks = masks["pred_masks"]
    outputs = {}
    if one_to_many:
        outputs = {
            "all_pred_logits_o2m": all_logits[:, :, num_queries:],
            "all_pred_boxes_o2m": box_cxcywh_to_xyxy(many["boxes"]),
        }
        if one_to_many_masks:
            outputs["pred_masks_o2m"] = pred_masks[:, num_queries:]
            pred_masks = pred_masks[:, :num_queries]
    return {
        **outputs,
        "pred_logits": logits[:, -1],
        "pred_boxes": boxes_xyxy[:, -1],
        "pred_masks": pred_masks,
        "presence_logits": decoded["presence_logits"][:, -1],
        "semantic_seg": masks["semantic_seg"],
        "all_pred_logits": logits,
        "all_pred_boxes": boxes_xyxy,
        "all_presence_logits": decoded["presence_logits"],
        "reference_boxes": decoded["reference_boxes"],
    }


@keras.saving.register_keras_serializable(package="keras_sam3")
class SAM3Backbone(Backbone):
    """SAM 3 promptable concept segmentation, as a keras-hub `Backbone`.

    A functional model over injected components: the image and text
    encoders, the box-exemplar geometry encoder, the DETR encoder and
    decoder (presence token, box refinement), dot-product scoring and the
    mask decoder.

    Inputs (a dict):
        images: `(B, S, S, 3)` float in [-1, 1]; or `(N, S, S, 3)` with
            `B = N * K` prompts, each image's `K` prompts consecutive: the
            image encoder then runs once per image (`ImagesForPrompts`).
        token_ids: int `(B, T)`, `T` up to the text encoder's
            `max_sequence_length`; padding_mask: `(B, T)`, 1 on real tokens.
        boxes: `(B, Nb, 4)` normalized cxcywh (`Nb` may be 0).
        box_labels: int `(B, Nb)`: 1 positive, 0 negative, -10 padding.

    Outputs (a dict):
        pred_logits `(B, Q)`, pred_boxes `(B, Q, 4)` normalized xyxy (not
        clipped), pred_masks `(B, Q, 4S/14, 4S/14)` logits, presence_logits
        `(B, 1)`, semantic_seg `(B, 4S/14, 4S/14, 1)` logits, and per decoder
        layer: all_pred_logits `(B, L, Q)`, all_pred_boxes `(B, L, Q, 4)`,
        all_presence_logits `(B, L, 1)`, reference_boxes `(B, L, Q, 4)`
        (cxcywh input boxes of each layer).

    Args:
        vision_encoder, text_encoder, geometry_encoder, detr_encoder,
        detr_decoder, scoring, mask_decoder: the component layers.
        image_size: int. Input side in pixels. Defaults to `1008`.
        dtype: dtype policy for the whole model.
    """

    def __init__(
        self,
        vision_encoder,
        text_encoder,
        geometry_encoder,
        detr_encoder,
        detr_decoder,
        scoring,
        mask_decoder,
        image_size=1008,
        dtype=None,
        **kwargs,
    ):
        # === Layers ===
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.geometry_encoder = geometry_encoder
        self.detr_encoder = detr_encoder
        self.detr_decoder = detr_decoder
        self.scoring = scoring
        self.mask_decoder = mask_decoder
        # No casting: the features pass in the vision encoder's dtype.
        self.images_for_prompts = ImagesForPrompts(
            name="images_for_prompts", dtype=vision_encoder.dtype_policy, autocast=False
        )
        self.freeze_unread_levels()

        # === Functional model ===
        inputs = {
            "images": keras.Input((image_size, image_size, 3), name="images"),
            # Any length up to the text encoder's: see `trim_prompt_padding`.
            "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input((None,), dtype="int32", name="padding_mask"),
            "boxes": keras.Input((None, 4), name="boxes"),
            "box_labels": keras.Input((None,), dtype="int32", name="box_labels"),
        }
        outputs = self._graph_outputs(inputs)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.image_size = image_size

    def _graph_outputs(self, inputs, one_to_many=False, one_to_many_masks=True):
        vision = dict(self.vision_encoder(inputs["images"]))
        # Fewer images than prompts: each image encoded once for its prompts.
        levels = self.images_for_prompts([vision[k] for k in PROMPTED_LEVELS], inputs["token_ids"])
        vision.update(zip(PROMPTED_LEVELS, levels))
        text = self.text_encoder(inputs["token_ids"], inputs["padding_mask"])
        return prompt_head(
            self,
            vision,
            text["text_features"],
            text["text_mask"],
            inputs["boxes"],
            inputs["box_labels"],
            one_to_many=one_to_many,
            one_to_many_masks=one_to_many_masks,
        )

    def one_to_many_model(self, masks=True):
        """A `keras.Model` on the backbone's inputs and weights whose outputs
        add Meta's one-to-many (DAC) queries (`ONE_TO_MANY_OUTPUTS`; their
        masks unless `masks=False`) to the backbone's: what training with
        `SAM3Loss(o2m_weight=...)` runs."""
        outputs = self._graph_outputs(self.input, one_to_many=True, one_to_many_masks=masks)
        return keras.Model(self.input, outputs, name="sam3_one_to_many")

    def freeze_unread_levels(self):
        """Neck levels past the third feed nothing here (the reference computes
        and drops them too): their weights load with the checkpoint, but they
        get no gradient, so they do not train. Setting the vision encoder
        trainable again re-enables them; the task's `compile()` calls this."""
        for level in self.vision_encoder.neck.fpn_layers[3:]:
            level.trainable = False

    def quantize(self, mode, **kwargs):
        """Not supported: keras_sam3's `Dense` runs its own fused product on
        the float kernel, so Keras' quantization would leave every layer as
        it is (with a warning per layer) or, forced, compute with kernels
        the layers do not read."""
        raise NotImplementedError(
            f"SAM3Backbone.quantize({mode!r}): quantization is not supported by keras_sam3's "
            "layers; use a bfloat16 or mixed_bfloat16 dtype policy to halve the weights' memory "
            "or compute."
        )

    def default_lora_layer_names(self):
        """keras-hub's `enable_lora(rank)` targets every attention's query and value."""
        return ["q_proj", "v_proj"]

    def get_config(self):
        config = super().get_config()
        config["image_size"] = self.image_size
        for name in _COMPONENTS:
            config[name] = keras.layers.serialize(getattr(self, name))
        config["training_state"] = self.training_state()
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's `Backbone.from_preset` for Keras presets, plus the
        names registered under `presets/` (`keras_sam3.presets`) and
        Hugging Face checkpoints (converted, as the segmenter's
        `from_preset`). A `dtype` applies to every component (keras-hub's
        sets only the outer model's, and each component would restore its
        saved policy)."""
        from keras_sam3.presets import is_keras_preset
        from keras_sam3.presets import load_backbone_and_tokenizer
        from keras_sam3.presets import resolve_preset_name

        preset = resolve_preset_name(preset)
        dtype = kwargs.get("dtype")
        known = os.path.isdir(preset) or preset.startswith(("hf://", "kaggle://"))
        if not (known and is_keras_preset(preset)):  # unknown names: load_backbone_and_tokenizer says so
            if known and (not load_weights or set(kwargs) - {"dtype"}):
                raise ValueError(
                    f"{preset!r} is not a Keras preset: a Hugging Face checkpoint is converted "
                    "with its weights, and takes only `dtype` here (see keras_sam3.convert_backbone)."
                )
            return load_backbone_and_tokenizer(preset, dtype=dtype)[0]
        token = _PRESET_DTYPE.set(None if dtype is None else keras.dtype_policies.get(dtype))
        try:
            return super().from_preset(preset, load_weights=load_weights, **kwargs)
        finally:
            _PRESET_DTYPE.reset(token)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        state = config.pop("training_state", None)
        dtype = _PRESET_DTYPE.get()
        if dtype is not None:
            config["dtype"] = dtype
        for name in _COMPONENTS:
            if isinstance(config.get(name), dict):
                if dtype is not None:
                    config[name] = {**config[name], "config": {**config[name]["config"], "dtype": dtype}}
                config[name] = keras.layers.deserialize(config[name])
        backbone = super().from_config(config)
        if state is not None:
            backbone.restore_training_state(state)
        return backbone

    def training_state(self):
        """Which layers are frozen and which carry LoRA adapters, by their
        index in `_flatten_layers` order: what `freeze_encoders()`,
        `enable_lora()` and `trainable = False` leave on the sub-layers.

        The components' configs rebuild their sub-layers trainable, so
        without it a frozen or LoRA model would reload with every weight
        trainable (and its saved optimizer state would no longer fit).
        """
        layers = list(self._flatten_layers(include_self=False))
        lora = [i for i, layer in enumerate(layers) if getattr(layer, "lora_enabled", False)]
        return {
            "frozen": [i for i, layer in enumerate(layers) if not layer.trainable],
            "lora_layers": lora,
            "lora_rank": layers[lora[0]].lora_rank if lora else None,
            "lora_alpha": layers[lora[0]].lora_alpha if lora else None,
        }

    def restore_training_state(self, state):
        """Applies a `training_state()` to this (freshly built) backbone."""
        layers = list(self._flatten_layers(include_self=False))
        frozen = set(state["frozen"])
        # Parents come before their sub-layers, and `trainable` propagates
        # down: each layer's own flag wins.
        for i, layer in enumerate(layers):
            layer.trainable = i not in frozen
        for i in state["lora_layers"]:
            layers[i].enable_lora(state["lora_rank"], lora_alpha=state["lora_alpha"])
