"""A Hugging Face SAM 3 checkpoint directory and its config, read with numpy."""

import json
import os

from keras_sam3.convert.safetensors_io import read_checkpoint_tensors

DETECTOR_PREFIX = "detector_model."


class HFCheckpoint:
    """A Hugging Face SAM 3 checkpoint directory (config.json + safetensors).

    Accepts a plain `Sam3Model` directory and the full `facebook/sam3`
    layout, whose detector keys carry a `detector_model.` prefix and whose
    config nests the detector under `detector_config`. `tensors` holds the
    detector keys without that prefix; `other_tensors` holds the rest
    (`tracker_model.*`, `tracker_neck.*`); `file_tensors` every key as the
    file names it.
    """

    def __init__(self, directory, weights=True):
        """`weights=False` reads the configuration alone (`tensors` empty)."""
        config_path = os.path.join(directory, "config.json")
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"No config.json in {directory!r}.")
        with open(config_path) as f:
            config = json.load(f)
        self._set(config, read_checkpoint_tensors(directory) if weights else {})

    @classmethod
    def from_state(cls, config, tensors):
        """From a config dict and `{key: numpy array}` already in memory (a
        reference model's `state_dict`), without writing files."""
        checkpoint = cls.__new__(cls)
        checkpoint._set(config, tensors)
        return checkpoint

    def _set(self, config, raw):
        self.full_config = config
        self.config = config.get("detector_config") or config
        self.file_tensors = raw
        prefixed = any(k.startswith(DETECTOR_PREFIX) for k in raw)
        self.tensors, self.other_tensors = {}, {}
        for key, value in raw.items():
            if prefixed and key.startswith(DETECTOR_PREFIX):
                self.tensors[key[len(DETECTOR_PREFIX) :]] = value
            elif prefixed:
                self.other_tensors[key] = value
            else:
                self.tensors[key] = value

    def vision_encoder_kwargs(self):
        vision = self.config.get("vision_config") or {}
        vit = vision.get("backbone_config") or {}
        if vit.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"Unsupported ViT hidden_act {vit['hidden_act']!r}.")
        rope = vit.get("rope_parameters") or {}
        kwargs = {
            "hidden_dim": vit.get("hidden_size", 1024),
            "intermediate_dim": vit.get("intermediate_size", 4736),
            "num_layers": vit.get("num_hidden_layers", 32),
            "num_heads": vit.get("num_attention_heads", 16),
            "patch_size": vit.get("patch_size", 14),
            "pretrain_image_size": vit.get("pretrain_image_size", 336),
            "window_size": vit.get("window_size", 24),
            "global_attn_indexes": tuple(vit.get("global_attn_indexes") or (7, 15, 23, 31)),
            "layer_norm_epsilon": vit.get("layer_norm_eps", 1e-6),
            "rope_theta": rope.get("rope_theta", vit.get("rope_theta", 10000.0)),
            "fpn_hidden_dim": vision.get("fpn_hidden_size", 256),
            "scale_factors": tuple(vision.get("scale_factors") or (4.0, 2.0, 1.0, 0.5)),
        }
        for name in ("patch_size", "pretrain_image_size"):
            if isinstance(kwargs[name], (list, tuple)):
                if kwargs[name][0] != kwargs[name][1]:
                    raise ValueError(f"Non-square {name} {kwargs[name]} is not supported.")
                kwargs[name] = kwargs[name][0]
        return kwargs

    def image_size(self):
        vit = (self.config.get("vision_config") or {}).get("backbone_config") or {}
        size = vit.get("image_size", 1008)
        return size[0] if isinstance(size, (list, tuple)) else size

    def text_encoder_kwargs(self):
        text = self.config.get("text_config") or {}
        detr = self.config.get("detr_encoder_config") or {}
        return {
            "vocabulary_size": text.get("vocab_size", 49408),
            "hidden_dim": text.get("hidden_size", 1024),
            "intermediate_dim": text.get("intermediate_size", 4096),
            "num_layers": text.get("num_hidden_layers", 24),
            "num_heads": text.get("num_attention_heads", 16),
            "max_sequence_length": text.get("max_position_embeddings", 32),
            "output_dim": detr.get("hidden_size", 256),
            "layer_norm_epsilon": text.get("layer_norm_eps", 1e-5),
            "activation": text.get("hidden_act", "gelu"),
        }

    def _sub(self, name):
        return self.config.get(name) or {}

    def geometry_encoder_kwargs(self):
        geo = self._sub("geometry_encoder_config")
        # The reference builds every norm here with PyTorch's default 1e-5;
        # the config's layer_norm_eps is never read.
        return {
            "hidden_dim": geo.get("hidden_size", 256),
            "num_layers": geo.get("num_layers", 3),
            "num_heads": geo.get("num_attention_heads", 8),
            "intermediate_dim": geo.get("intermediate_size", 2048),
            "roi_size": geo.get("roi_size", 7),
            "dropout_rate": geo.get("dropout", 0.1),
        }

    def detr_encoder_kwargs(self):
        enc = self._sub("detr_encoder_config")
        return {
            "hidden_dim": enc.get("hidden_size", 256),
            "num_layers": enc.get("num_layers", 6),
            "num_heads": enc.get("num_attention_heads", 8),
            "intermediate_dim": enc.get("intermediate_size", 2048),
            "dropout_rate": enc.get("dropout", 0.1),
        }

    def detr_decoder_kwargs(self):
        dec = self._sub("detr_decoder_config")
        return {
            "hidden_dim": dec.get("hidden_size", 256),
            "num_layers": dec.get("num_layers", 6),
            "num_heads": dec.get("num_attention_heads", 8),
            "intermediate_dim": dec.get("intermediate_size", 2048),
            "num_queries": dec.get("num_queries", 200),
            "dropout_rate": dec.get("dropout", 0.1),
        }

    def scoring_kwargs(self):
        dec = self._sub("detr_decoder_config")
        return {
            "hidden_dim": dec.get("hidden_size", 256),
            "intermediate_dim": dec.get("intermediate_size", 2048),
            "dropout_rate": dec.get("dropout", 0.1),
        }

    def mask_decoder_kwargs(self):
        mask = self._sub("mask_decoder_config")
        return {
            "hidden_dim": mask.get("hidden_size", 256),
            "num_heads": mask.get("num_attention_heads", 8),
            "dropout_rate": mask.get("dropout", 0.0),
        }

    def num_pixel_decoder_stages(self):
        return self._sub("mask_decoder_config").get("num_upsampling_stages", 3)
