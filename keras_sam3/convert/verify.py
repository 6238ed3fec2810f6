"""Checks a converted `SAM3Backbone` against the reference `transformers` model.

Needs torch and transformers. The reference's box path calls
`torchvision.ops.roi_align`; without torchvision only text prompts are
compared, on a model converted in the reference's text-only mode.
"""

import numpy as np

TOLERANCE = 1e-4
OUTPUTS = ("pred_logits", "pred_boxes", "presence_logits", "semantic_seg", "pred_masks")


def _has_torchvision():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def run_reference(model, inputs, with_boxes=True):
    """Runs a `transformers` `Sam3Model` on `SAM3Backbone`-style numpy inputs.

    Returns our output names and layouts as numpy: `pred_logits`,
    `pred_boxes`, `presence_logits`, `semantic_seg` (channels last) and
    `pred_masks`.
    """
    import torch

    kwargs = {}
    if with_boxes:
        kwargs["input_boxes"] = torch.from_numpy(np.asarray(inputs["boxes"], "float32"))
        kwargs["input_boxes_labels"] = torch.from_numpy(np.asarray(inputs["box_labels"])).long()
    with torch.no_grad():
        out = model(
            pixel_values=torch.from_numpy(np.ascontiguousarray(np.transpose(inputs["images"], (0, 3, 1, 2)))),
            input_ids=torch.from_numpy(np.asarray(inputs["token_ids"])).long(),
            attention_mask=torch.from_numpy(np.asarray(inputs["padding_mask"])).long(),
            **kwargs,
        )
    result = {name: getattr(out, name).detach().float().numpy() for name in OUTPUTS}
    result["semantic_seg"] = result["semantic_seg"].transpose(0, 2, 3, 1)
    return result


def verify_backbone(backbone, checkpoint_dir, seed=0, tolerance=TOLERANCE):
    """Runs both models on random inputs; returns `{output: (max|diff|, bound)}`.

    Raises `AssertionError` naming every output with
    `max|ours - ref| > tolerance * max(1, max|ref|)`.
    """
    import transformers

    reference = transformers.Sam3Model.from_pretrained(checkpoint_dir).eval()
    size = backbone.image_size
    rng = np.random.default_rng(seed)
    inputs = {
        "images": rng.uniform(-1, 1, (1, size, size, 3)).astype("float32"),
        "token_ids": rng.integers(0, backbone.text_encoder.vocabulary_size - 2, (1, 32)).astype("int32"),
        "padding_mask": (np.arange(32) < 8).astype("int32")[None],
        "boxes": np.zeros((1, 0, 4), "float32"),
        "box_labels": np.zeros((1, 0), "int32"),
    }
    with_boxes = _has_torchvision() and backbone.geometry_encoder.cls_without_boxes
    if with_boxes:
        inputs["boxes"] = np.array([[[0.45, 0.5, 0.3, 0.4], [0.7, 0.3, 0.2, 0.2]]], "float32")
        inputs["box_labels"] = np.array([[1, 0]], "int32")
    elif backbone.geometry_encoder.cls_without_boxes:
        raise ValueError(
            "Without torchvision only text prompts can be verified, and they need "
            "a backbone converted with cls_without_boxes=False (the reference's "
            "text-only behaviour)."
        )
    expected = run_reference(reference, inputs, with_boxes)
    ours = backbone.predict_on_batch(inputs)
    results, failures = {}, []
    for name in OUTPUTS:
        ref = expected[name]
        got = np.asarray(ours[name], dtype=np.float64)
        error = float(np.abs(got - ref).max())
        bound = tolerance * max(1.0, float(np.abs(ref).max()))
        results[name] = (error, bound)
        if not error <= bound:
            failures.append(f"{name}: max|diff| {error:.3e} > {bound:.3e}")
    if failures:
        raise AssertionError("Parity violated:\n  " + "\n  ".join(failures))
    return results
