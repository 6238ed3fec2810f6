"""Tiny random reference models (Hugging Face `transformers` SAM 3) for parity.

A reference model is built from a small config with a fixed seed, every
constant-initialised parameter (biases, norms) is perturbed so that no branch
is trivially zero, and it is saved with `save_pretrained`; tests load that
directory through the project's converter.
"""

import os

import numpy as np

torch = __import__("pytest").importorskip("torch", reason="parity tests need torch")
transformers = __import__("pytest").importorskip(
    "transformers", reason="parity tests need transformers (the reference)"
)

TEXT_VOCAB = 100
TEXT_PAD_ID = 99


def tiny_sam3_config(image_size=112, initializer_range=0.2, text_vocab=TEXT_VOCAB):
    """A small `Sam3Config`: every component, a few layers, narrow widths.

    Weights are drawn wider than the reference's 0.02 so that logits, boxes
    and masks reach magnitudes near 1 and an absolute tolerance means
    something.
    """
    config = transformers.Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=32,
                intermediate_size=74,
                num_hidden_layers=4,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=14,
                pretrain_image_size=56,
                window_size=4,
                global_attn_indexes=[1, 3],
            ),
            fpn_hidden_size=16,
        ),
        text_config=dict(
            vocab_size=text_vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            projection_dim=24,
            hidden_act="gelu",
            eos_token_id=text_vocab - 1,
            pad_token_id=text_vocab - 1,
            bos_token_id=text_vocab - 2,
        ),
        geometry_encoder_config=dict(
            hidden_size=16, num_layers=2, num_attention_heads=2, intermediate_size=32
        ),
        detr_encoder_config=dict(
            hidden_size=16, num_layers=2, num_attention_heads=2, intermediate_size=32
        ),
        detr_decoder_config=dict(
            hidden_size=16,
            num_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_queries=6,
        ),
        mask_decoder_config=dict(hidden_size=16, num_attention_heads=2),
    )
    for sub in (
        config,
        config.vision_config,
        config.vision_config.backbone_config,
        config.text_config,
        config.geometry_encoder_config,
        config.detr_encoder_config,
        config.detr_decoder_config,
        config.mask_decoder_config,
    ):
        sub.initializer_range = initializer_range
    return config


def perturb_constant_parameters(model, seed=0, scale=0.1):
    """Adds noise to every parameter initialised to a constant (zeros, ones)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            flat = param.reshape(-1)
            if flat.numel() == 1 or bool((flat == flat[0]).all()):
                noise = torch.randn(param.shape, generator=generator) * scale
                param.add_(noise.to(param.dtype))
    return model


def make_reference_model(config, seed=0):
    torch.manual_seed(seed)
    model = transformers.Sam3Model(config).eval()
    return perturb_constant_parameters(model, seed=seed)


def save_reference(model, directory):
    model.save_pretrained(str(directory))
    return str(directory)


def to_numpy(tensor):
    return tensor.detach().cpu().numpy()


def nchw_to_nhwc(tensor):
    return np.transpose(to_numpy(tensor), (0, 2, 3, 1))


def assert_close(ours, ref, rtol_scale, name):
    """`max|ours - ref| <= rtol_scale * max(1, max|ref|)`, with a readable failure."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} vs reference {ref.shape}"
    assert np.all(np.isfinite(ours)), f"{name}: non-finite values"
    tolerance = rtol_scale * max(1.0, float(np.abs(ref).max()))
    error = float(np.abs(ours - ref).max())
    assert error <= tolerance, (
        f"{name}: max|ours - ref| = {error:.3e} > {tolerance:.3e} "
        f"(max|ref| = {np.abs(ref).max():.3e})"
    )
    return error


def tiny_sam3_video_config(image_size=112, text_vocab=TEXT_VOCAB):
    """A small `Sam3VideoConfig`: saved, it has exactly the `facebook/sam3`
    layout (`detector_model.`, `tracker_model.`, `tracker_neck.`)."""
    detector = tiny_sam3_config(image_size, text_vocab=text_vocab)
    return transformers.Sam3VideoConfig(
        detector_config=detector.to_dict(),
        tracker_config=dict(
            image_size=image_size,  # the tracker config's own size overrides its sub-configs'
            vision_config=detector.vision_config.to_dict(),
            prompt_encoder_config=dict(hidden_size=16, image_size=image_size, patch_size=14),
            mask_decoder_config=dict(
                hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16
            ),
            memory_attention_hidden_size=16,
            memory_attention_num_layers=1,
            memory_attention_feed_forward_hidden_size=32,
            memory_encoder_hidden_size=16,
            memory_encoder_output_channels=8,
            mask_downsampler_embed_dim=16,
            memory_fuser_embed_dim=16,
            memory_fuser_intermediate_dim=32,
        ),
    )


def make_reference_video_checkpoint(directory, image_size=112, seed=0, text_vocab=TEXT_VOCAB):
    """Saves a tiny `Sam3VideoModel` (the full facebook/sam3 layout) and
    returns the directory."""
    torch.manual_seed(seed)
    model = transformers.Sam3VideoModel(tiny_sam3_video_config(image_size, text_vocab)).eval()
    perturb_constant_parameters(model, seed=seed)
    save_reference(model, directory)
    # transformers 5.23 writes the tracker as `tracker_model.tracker_model.*`;
    # facebook/sam3 (and `Sam3TrackerModel.from_pretrained`) use one prefix.
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    path = os.path.join(str(directory), "model.safetensors")
    tensors = load_file(path)
    double = "tracker_model.tracker_model."
    tensors = {("tracker_model." + k[len(double):] if k.startswith(double) else k): v for k, v in tensors.items()}
    save_file(tensors, path, metadata={"format": "pt"})
    return str(directory)


# The tracker's modules in a saved file (facebook/sam3, `Sam3VideoModel` or
# `Sam3TrackerModel` layout), not the detector's (`detector_model.*`).
_TRACKER_KEYS = r"^(tracker_model\.)?(prompt_encoder\.|mask_decoder\.|tracker_neck\.|no_memory_embedding$)"


def sharpen_tracker_checkpoint(directory, factor=12.0):
    """Multiplies the saved tracker's matrices (prompt encoder, mask
    decoder, neck, no-memory embedding; not the Fourier matrices) by `factor`.

    With transformers' default init (0.02) the tracker's mask logits are
    ~0.005 and moving a click changes them by ~1e-6, below any tolerance;
    at 12x they reach ~30 and a prompt change moves them by ~1, so a parity
    test can tell a wrong prompt from a right one.
    """
    import re

    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    path = os.path.join(str(directory), "model.safetensors")
    tensors = load_file(path)
    for key, value in tensors.items():
        if re.match(_TRACKER_KEYS, key) and value.ndim >= 2 and "positional_embedding" not in key:
            tensors[key] = value * np.asarray(factor, value.dtype)
    save_file(tensors, path, metadata={"format": "pt"})
    return str(directory)


def make_reference_tracker_checkpoint(directory, image_size=112, seed=0):
    """Saves a tiny `Sam3TrackerModel` (sharpened) with its own
    `save_pretrained` and returns the directory."""
    torch.manual_seed(seed)
    config = tiny_sam3_video_config(image_size).tracker_config
    model = transformers.Sam3TrackerModel(config).eval()
    perturb_constant_parameters(model, seed=seed)
    save_reference(model, directory)
    return sharpen_tracker_checkpoint(directory)
