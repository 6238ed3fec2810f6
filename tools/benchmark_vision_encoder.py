"""Vision encoder speed: keras_sam3 against the reference, side by side.

For each Keras backend a fresh process builds our `SAM3VisionEncoder` and
the reference `transformers` `Sam3VisionModel` (PyTorch eager, no grad) at
the same architecture, feeds both the same random image batch, alternates
their calls, and reports first-call and steady-state (median) seconds and
the ratio ours / reference. When keras-hub ships its own SAM 3 port, its
vision encoder runs in the same process the same way (`predict_on_batch`
of a functional model) as a third column. Weights are random: speed does
not depend on them (parity is the tests' job).

Usage:
    python tools/benchmark_vision_encoder.py                  # default arch, 336 px, all backends
    python tools/benchmark_vision_encoder.py --image-size 1008 --backends jax
    python tools/benchmark_vision_encoder.py --json out.json

Needs torch and transformers (the test extra).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # keras_sam3 without installing

BACKENDS = ("jax", "tensorflow", "torch")


def _tiny_kwargs():
    return dict(
        hidden_dim=64,
        intermediate_dim=128,
        num_layers=4,
        num_heads=4,
        pretrain_image_size=56,
        window_size=4,
        global_attn_indexes=(1, 3),
        fpn_hidden_dim=32,
    )


def _reference_model(kwargs, image_size):
    import transformers

    vit = dict(
        model_type="sam3_vit_model",
        image_size=image_size,
        hidden_size=kwargs.get("hidden_dim", 1024),
        intermediate_size=kwargs.get("intermediate_dim", 4736),
        num_hidden_layers=kwargs.get("num_layers", 32),
        num_attention_heads=kwargs.get("num_heads", 16),
        pretrain_image_size=kwargs.get("pretrain_image_size", 336),
        window_size=kwargs.get("window_size", 24),
        global_attn_indexes=list(kwargs.get("global_attn_indexes", (7, 15, 23, 31))),
    )
    config = transformers.Sam3VisionConfig(
        backbone_config=vit, fpn_hidden_size=kwargs.get("fpn_hidden_dim", 256)
    )
    return transformers.Sam3VisionModel(config).eval()


def _keras_hub_model(kwargs, image_size, batch):
    """keras-hub's own SAM 3 vision encoder at the same architecture, or None."""
    import keras

    try:
        from keras_hub.src.models.sam3.sam3_vision_encoder import SAM3VisionEncoder
    except ImportError:
        return None
    encoder = SAM3VisionEncoder(
        image_shape=(image_size, image_size, 3),
        patch_size=14,
        num_layers=kwargs.get("num_layers", 32),
        hidden_dim=kwargs.get("hidden_dim", 1024),
        intermediate_dim=kwargs.get("intermediate_dim", 4736),
        num_heads=kwargs.get("num_heads", 16),
        fpn_hidden_dim=kwargs.get("fpn_hidden_dim", 256),
        fpn_scale_factors=[4.0, 2.0, 1.0, 0.5],
        pretrain_image_shape=(kwargs.get("pretrain_image_size", 336),) * 2 + (3,),
        window_size=kwargs.get("window_size", 24),
        global_attn_indexes=list(kwargs.get("global_attn_indexes", (7, 15, 23, 31))),
    )
    inputs = keras.Input((image_size, image_size, 3), batch_size=batch)
    features, _ = encoder(inputs)
    return keras.Model(inputs, features[0])


def worker(args):
    import keras
    import numpy as np
    import torch

    from keras_sam3 import SAM3VisionEncoder

    kwargs = _tiny_kwargs() if args.config == "tiny" else {}
    size = args.image_size
    images = np.random.default_rng(0).uniform(-1, 1, (args.batch, size, size, 3))
    images = images.astype("float32")
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

    # On a CUDA machine Keras puts ours on the GPU: the reference goes there too.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = _reference_model(kwargs, size).to(device)
    pixels = pixels.to(device)
    encoder = SAM3VisionEncoder(**kwargs)
    inputs = keras.Input((size, size, 3), batch_size=args.batch)
    model = keras.Model(inputs, encoder(inputs))

    def run_ours():
        out = model.predict_on_batch(images)
        return out["fpn_hidden_states_0"]

    def run_reference():
        with torch.inference_mode():
            return reference(pixel_values=pixels).fpn_hidden_states[0].cpu()  # waits, as ours' numpy does

    runners = {"ours": run_ours, "reference": run_reference}
    if not args.no_keras_hub:
        hub_model = _keras_hub_model(kwargs, size, args.batch)
        if hub_model is not None:
            runners["keras_hub"] = lambda: hub_model.predict_on_batch(images)

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    first = {name: timed(fn) for name, fn in runners.items()}
    steady = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            steady[name].append(timed(fn))
    median = {k: statistics.median(v) for k, v in steady.items()}
    result = {
        "backend": keras.backend.backend(),
        "config": args.config,
        "image_size": size,
        "batch": args.batch,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "reference_device": device,
        "ours_first_s": first["ours"],
        "reference_first_s": first["reference"],
        "ours_median_s": median["ours"],
        "reference_median_s": median["reference"],
        "ours_all_s": steady["ours"],
        "reference_all_s": steady["reference"],
        "ratio": median["ours"] / median["reference"],
    }
    if "keras_hub" in runners:
        result.update(
            keras_hub_first_s=first["keras_hub"],
            keras_hub_median_s=median["keras_hub"],
            keras_hub_all_s=steady["keras_hub"],
            keras_hub_ratio=median["keras_hub"] / median["reference"],
        )
    print("RESULT " + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", choices=("default", "tiny"), default="default")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--no-keras-hub", action="store_true", help="skip keras-hub's SAM 3 port")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    results = []
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; choose from {BACKENDS}")
        print(f"[{backend}] running ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--worker"] + [
            f"--image-size={args.image_size}",
            f"--batch={args.batch}",
            f"--repeats={args.repeats}",
            f"--config={args.config}",
        ] + (["--no-keras-hub"] if args.no_keras_hub else [])
        env = dict(os.environ, KERAS_BACKEND=backend)
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"[{backend}] benchmark failed (exit {proc.returncode})")
        results.append(json.loads(lines[-1][len("RESULT ") :]))

    print(
        f"\nVision encoder, {args.config} architecture, {args.image_size} px, batch "
        f"{args.batch}, median of {args.repeats} steady calls (seconds)\n"
    )
    print(
        "| backend | ours first | ours steady | reference first | reference steady "
        "| ours / reference | keras-hub steady | keras-hub / reference |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        hub = (
            f"{r['keras_hub_median_s']:.3f} | {r['keras_hub_ratio']:.2f}x"
            if "keras_hub_ratio" in r
            else "n/a | n/a"
        )
        print(
            f"| {r['backend']} | {r['ours_first_s']:.3f} | {r['ours_median_s']:.3f} | "
            f"{r['reference_first_s']:.3f} | {r['reference_median_s']:.3f} | {r['ratio']:.2f}x | {hub} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
