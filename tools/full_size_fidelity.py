"""Full-size fidelity: the default SAM 3 architecture, random weights, ours
against the reference `transformers` `Sam3Model`, per output.

For each backend (a fresh process each) and image size this builds the
reference at the default configuration with a fixed seed (constant-initialised
parameters perturbed, as in the tests), converts its state dict in memory,
runs both on the same random image with a text prompt plus a positive and a
negative box, and prints max|ours - ref| and max|ref| per output. It fails
(exit 1) when an output exceeds `--tolerance * max(1, max|ref|)`.

    python tools/full_size_fidelity.py                        # 336 and 1008 px, all backends
    python tools/full_size_fidelity.py --sizes 336 --backends torch --json out.json

On a GPU machine the same command runs the JAX and PyTorch backends there;
TF32 is switched off for both. Needs torch and transformers; without
torchvision the reference's `roi_align` is the test suite's faithful
stand-in (`tests/parity/roi_align_reference.py`). CPU cost: about 20 GB peak
and several minutes per backend at 1008 px.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BACKENDS = ("jax", "tensorflow", "torch")


def worker(args):
    import numpy as np
    import torch
    import transformers

    sys.path.insert(0, ROOT)
    import keras

    from keras_sam3.convert.hf_checkpoint import HFCheckpoint
    from keras_sam3.convert.hf_to_keras import build_backbone
    from keras_sam3.convert.hf_to_keras import load_backbone_weights
    from keras_sam3.convert.verify import OUTPUTS
    from keras_sam3.convert.verify import run_reference
    from tests.parity.reference import perturb_constant_parameters

    try:
        import torchvision  # noqa: F401

        roi_align = "torchvision"
    except ImportError:
        from tests.parity.roi_align_reference import install_in_reference

        install_in_reference()
        roi_align = "stand-in (tests/parity/roi_align_reference.py)"

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")

    size = args.image_size
    start = time.time()
    torch.manual_seed(0)
    config = transformers.Sam3Config()
    config.vision_config.backbone_config.image_size = size
    reference = perturb_constant_parameters(transformers.Sam3Model(config).eval())
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    backbone = build_backbone(HFCheckpoint.from_state(config.to_dict(), state), image_size=size)
    load_backbone_weights(backbone, HFCheckpoint.from_state(config.to_dict(), state))
    del state
    build_s = time.time() - start

    rng = np.random.default_rng(0)
    inputs = {
        "images": rng.uniform(-1, 1, (1, size, size, 3)).astype("float32"),
        "token_ids": rng.integers(0, 49406, (1, 32)).astype("int32"),
        "padding_mask": (np.arange(32) < 6).astype("int32")[None],
        "boxes": np.array([[[0.45, 0.5, 0.3, 0.4], [0.7, 0.3, 0.2, 0.2]]], "float32"),
        "box_labels": np.array([[1, 0]], "int32"),
    }
    start = time.time()
    expected = run_reference(reference, inputs)
    reference_s = time.time() - start
    start = time.time()
    ours = backbone.predict_on_batch(inputs)
    ours_s = time.time() - start

    rows = {}
    for name in OUTPUTS:
        ref = expected[name].astype("float64")
        got = np.asarray(ours[name], dtype="float64")
        rows[name] = {
            "max_abs_diff": float(np.abs(got - ref).max()),
            "max_abs_ref": float(np.abs(ref).max()),
        }
    result = {
        "backend": keras.backend.backend(),
        "device": str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
        "image_size": size,
        "roi_align": roi_align,
        "build_s": build_s,
        "reference_forward_s": reference_s,
        "ours_first_forward_s": ours_s,
        "outputs": rows,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sizes", default="336,1008")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--image-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    results, failed = [], False
    for size in [int(s) for s in args.sizes.split(",")]:
        for backend in args.backends.split(","):
            print(f"[{backend} {size}px] running ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", f"--image-size={size}"],
                env=dict(os.environ, KERAS_BACKEND=backend),
                capture_output=True,
                text=True,
            )
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise SystemExit(f"[{backend} {size}px] failed (exit {proc.returncode})")
            results.append(json.loads(lines[-1][len("RESULT ") :]))
            print(f"[{backend} {size}px] {json.dumps(results[-1])}", file=sys.stderr, flush=True)

    print("| backend | size | output | max abs diff | max abs ref | bound | ok |")
    print("|---|---:|---|---:|---:|---:|---|")
    for r in results:
        for name, row in r["outputs"].items():
            bound = args.tolerance * max(1.0, row["max_abs_ref"])
            ok = row["max_abs_diff"] <= bound
            failed |= not ok
            print(
                f"| {r['backend']} ({r['device']}) | {r['image_size']} | {name} | "
                f"{row['max_abs_diff']:.2e} | {row['max_abs_ref']:.2e} | {bound:.0e} | "
                f"{'yes' if ok else 'NO'} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
