"""Full SAM 3 concept segmentation: ours against the peers, side by side.

For each backend this runs, each in a fresh process (so that peak memory is
its own): our `SAM3Backbone` (and its encode-once / prompt-many path), the
reference `transformers` `Sam3Model` (PyTorch eager, inference mode) and,
when installed, keras-hub's own SAM 3 port, at the same architecture with
random weights on the same random image and a text prompt. It reports the
first call, the steady median, peak resident memory, the split between
image encoding and one prompt, four prompts on one encoded image, and
ratios against the reference. Text prompts only: the reference's box path
needs torchvision.

On a machine with a CUDA GPU, ours (JAX and PyTorch backends) and the
reference run on it: every call's outputs come back to the host (ours as
`predict_on_batch` returns them, the reference's by `.cpu()`), so timings
include the device's work and the copies, and each row also gives
the device's peak memory (PyTorch's `max_memory_allocated`, JAX's
`peak_bytes_in_use`). TF32 is off for every peer unless `--tf32`.

    python tools/benchmark_segmenter.py --image-size 336 --json out.json
    python tools/benchmark_segmenter.py --image-size 1008 --backends jax --repeats 3

`--alone` adds, for each backend, a run of ours in a process where the
other backends' frameworks cannot be imported: what an install with only
that backend's framework holds (keras_sam3 needs only one; Keras imports
JAX and keras-hub imports TensorFlow whenever they are installed, 0.5-0.7
GB of resident memory that the reference's process does not carry). The
frameworks are blocked with `sys.modules[name] = None`, which makes their
import fail as it does when they are not installed.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BACKENDS = ("jax", "tensorflow", "torch")
PEERS = ("ours", "reference", "keras_hub")
# What each backend's process of `--alone` may not import.
OTHER_FRAMEWORKS = {
    "jax": ("tensorflow", "tensorflow_text", "torch", "torchvision"),
    "tensorflow": ("jax", "jaxlib", "torch", "torchvision"),
    "torch": ("jax", "jaxlib", "tensorflow", "tensorflow_text"),
}


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _steady(fn, repeats):
    return statistics.median(_timed(fn) for _ in range(repeats))


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _gpu():
    """The framework this process runs on a CUDA GPU ("jax", "tensorflow" or
    "torch"), or None."""
    backend = os.environ.get("KERAS_BACKEND", "jax")
    if backend == "jax" and sys.modules.get("keras") is not None:
        import jax

        return "jax" if jax.default_backend() == "gpu" else None
    if backend == "tensorflow" and sys.modules.get("keras") is not None:
        import tensorflow as tf

        return "tensorflow" if tf.config.list_physical_devices("GPU") else None
    if sys.modules.get("torch") is not None:
        import torch

        return "torch" if torch.cuda.is_available() else None
    return None


def _set_tf32(enabled):
    """TF32 on or off for the GPU matrix products of every framework loaded."""
    if sys.modules.get("torch") is not None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    if sys.modules.get("jax") is not None:
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if enabled else "highest")
    if sys.modules.get("tensorflow") is not None:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(enabled)  # on by default on Ampere+


def _device_name():
    gpu = _gpu()
    if gpu == "jax":
        import jax

        return jax.devices()[0].device_kind
    if gpu == "torch":
        import torch

        return torch.cuda.get_device_name(0)
    if gpu == "tensorflow":
        import tensorflow as tf

        return tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU")
    return "cpu"


def _device_peak_gb():
    """Peak GPU memory of this process so far (GB), or None off a GPU."""
    gpu = _gpu()
    if gpu == "jax":
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**30
    if gpu == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    if gpu == "tensorflow":
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    return None


def _inputs(size, batch=1):
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "images": rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"),
        "token_ids": np.concatenate(
            [np.full((batch, 1), 49406), rng.integers(0, 49000, (batch, 4)), np.full((batch, 27), 49407)], 1
        ).astype("int32"),
        "padding_mask": (np.arange(32) < 6).astype("int32")[None].repeat(batch, 0),
        "boxes": np.zeros((batch, 0, 4), "float32"),
        "box_labels": np.zeros((batch, 0), "int32"),
    }


def run_ours(size, repeats):
    import numpy as np

    sys.path.insert(0, ROOT)
    from keras_sam3.convert.hf_checkpoint import HFCheckpoint
    from keras_sam3.convert.hf_to_keras import build_backbone
    from keras_sam3.models.preprocessor import trim_prompt_padding
    from keras_sam3.models.segmenter import SAM3PromptableConceptImageSegmenter

    imports_rss = _peak_rss_gb()
    start = time.perf_counter()
    backbone = build_backbone(HFCheckpoint.from_state({}, {}), image_size=size)
    segmenter = SAM3PromptableConceptImageSegmenter(backbone)
    segmenter._build_split_models()
    build = time.perf_counter() - start
    x = _inputs(size)
    # What `segment()` and `segment_encoded()` pass: the 6-token prompt
    # without the padding past 8 columns (the same outputs). The reference
    # gets the 32 columns its processor pads to.
    x["token_ids"], x["padding_mask"] = trim_prompt_padding(x["token_ids"], x["padding_mask"])
    full = lambda: backbone.predict_on_batch(x)  # noqa: E731
    first = _timed(full)
    steady = _steady(full, repeats)
    full_rss = _peak_rss_gb()  # before the encode-once / four-prompt runs
    full_device = _device_peak_gb()

    image = segmenter._image_model
    prompt = segmenter._prompt_model
    features = {k: np.asarray(v) for k, v in image.predict_on_batch(x["images"]).items()}
    prompt_inputs = {**features, **{k: v for k, v in x.items() if k != "images"}}
    four = {k: np.repeat(v, 4, axis=0) for k, v in prompt_inputs.items()}
    prompt.predict_on_batch(prompt_inputs)
    prompt.predict_on_batch(four)
    encode = _steady(lambda: image.predict_on_batch(x["images"]), repeats)
    one_prompt = _steady(lambda: prompt.predict_on_batch(prompt_inputs), repeats)
    four_prompts = _steady(lambda: prompt.predict_on_batch(four), repeats)
    return {
        "build_s": build,
        "first_s": first,
        "steady_s": steady,
        "encode_s": encode,
        "prompt_s": one_prompt,
        "four_prompts_s": four_prompts,
        "full_rss_gb": full_rss,
        "full_device_gb": full_device,
        "prompt_columns": int(x["token_ids"].shape[1]),
        "prompt_boxes": 0,
        "imports_rss_gb": imports_rss,
    }


def run_reference(size, repeats):
    import torch
    import transformers

    transformers.Sam3Model  # noqa: B018 (transformers imports its modules lazily)
    imports_rss = _peak_rss_gb()
    x = _inputs(size)
    start = time.perf_counter()
    config = transformers.Sam3Config()
    config.vision_config.backbone_config.image_size = size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.Sam3Model(config).eval().to(device)
    build = time.perf_counter() - start
    pixels = torch.from_numpy(x["images"].transpose(0, 3, 1, 2).copy()).to(device)
    ids = torch.from_numpy(x["token_ids"]).long().to(device)
    mask = torch.from_numpy(x["padding_mask"]).long().to(device)

    def to_host(output):
        # Ours returns numpy (`predict_on_batch`): the reference's outputs
        # come to the host too. On a CPU this copies nothing.
        for value in output.values():
            for tensor in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(tensor, torch.Tensor):
                    tensor.cpu()

    def full():
        with torch.inference_mode():
            to_host(model(pixel_values=pixels, input_ids=ids, attention_mask=mask))

    first = _timed(full)
    steady = _steady(full, repeats)
    full_rss = _peak_rss_gb()
    full_device = _device_peak_gb()
    with torch.inference_mode():
        vision = model.get_vision_features(pixel_values=pixels)

    def encode():
        # The three FPN levels the prompts read: what our `encode()` returns
        # besides the (smaller) encoded tokens; not the position encodings.
        with torch.inference_mode():
            to_host({"fpn": model.get_vision_features(pixel_values=pixels).fpn_hidden_states[:3]})

    def prompt(n=1):
        with torch.inference_mode():
            to_host(model(vision_embeds=vision, input_ids=ids.repeat(n, 1), attention_mask=mask.repeat(n, 1)))

    return {
        "build_s": build,
        "first_s": first,
        "steady_s": steady,
        "encode_s": _steady(encode, repeats),
        "prompt_s": _steady(prompt, repeats),
        "full_rss_gb": full_rss,
        "full_device_gb": full_device,
        "prompt_columns": int(ids.shape[1]),
        "prompt_boxes": 0,
        "imports_rss_gb": imports_rss,
    }


def run_keras_hub(size, repeats):
    import numpy as np

    try:
        from keras_hub.src.models.sam3 import sam3_pc_backbone as hub
        from keras_hub.src.models.sam3.sam3_detr_decoder import SAM3DetrDecoder
        from keras_hub.src.models.sam3.sam3_detr_encoder import SAM3DetrEncoder
        from keras_hub.src.models.sam3.sam3_geometry_encoder import SAM3GeometryEncoder
        from keras_hub.src.models.sam3.sam3_mask_decoder import SAM3MaskDecoder
        from keras_hub.src.models.sam3.sam3_text_encoder import SAM3TextEncoder
        from keras_hub.src.models.sam3.sam3_vision_encoder import SAM3VisionEncoder
    except ImportError:
        return None
    imports_rss = _peak_rss_gb()
    start = time.perf_counter()
    shape = (size, size, 3)
    backbone = hub.SAM3PromptableConceptBackbone(
        vision_encoder=SAM3VisionEncoder(
            image_shape=shape, patch_size=14, num_layers=32, hidden_dim=1024, intermediate_dim=4736,
            num_heads=16, fpn_hidden_dim=256, fpn_scale_factors=[4.0, 2.0, 1.0, 0.5],
            pretrain_image_shape=(336, 336, 3), window_size=24, global_attn_indexes=[7, 15, 23, 31],
        ),
        text_encoder=SAM3TextEncoder(
            vocabulary_size=49408, embedding_dim=1024, hidden_dim=1024, num_layers=24, num_heads=16,
            intermediate_dim=4096,
        ),
        geometry_encoder=SAM3GeometryEncoder(num_layers=3, hidden_dim=256, intermediate_dim=2048, num_heads=8, roi_size=7),
        detr_encoder=SAM3DetrEncoder(num_layers=6, hidden_dim=256, intermediate_dim=2048, num_heads=8),
        detr_decoder=SAM3DetrDecoder(
            image_shape=shape, patch_size=14, num_layers=6, hidden_dim=256, intermediate_dim=2048,
            num_heads=8, num_queries=200,
        ),
        mask_decoder=SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=256, num_heads=8),
    )
    build = time.perf_counter() - start
    x = _inputs(size)
    inputs = {
        "pixel_values": x["images"],
        "token_ids": x["token_ids"],
        "padding_mask": x["padding_mask"],
        # One positive box ([batch index, cx, cy, w, h]): its padded, text-only
        # form fails inside its geometry encoder on TensorFlow.
        "boxes": np.array([[[0.0, 0.5, 0.5, 0.4, 0.4]]], "float32"),
        "box_labels": np.ones((1, 1), "int32"),
    }
    full = lambda: backbone.predict_on_batch(inputs)  # noqa: E731
    first = _timed(full)
    steady = _steady(full, repeats)
    return {
        "build_s": build,
        "first_s": first,
        "steady_s": steady,
        "full_rss_gb": _peak_rss_gb(),
        "full_device_gb": _device_peak_gb(),
        "prompt_columns": int(x["token_ids"].shape[1]),
        "prompt_boxes": 1,
        "imports_rss_gb": imports_rss,
    }


def block_other_frameworks(backend):
    """Makes the other backends' frameworks fail to import, as if not installed."""
    for name in OTHER_FRAMEWORKS[backend]:
        if name in sys.modules and sys.modules[name] is not None:
            raise RuntimeError(f"{name} was imported before it could be blocked")
        sys.modules[name] = None


def tune_allocator():
    """keras_sam3.tune_cpu_allocator, loaded from its file: importing the
    package would import Keras into the reference's process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_allocator", os.path.join(ROOT, "keras_sam3", "allocator.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not module.tune_cpu_allocator():
        raise RuntimeError("--tuned-allocator needs glibc (Linux)")


def worker(args):
    if args.tuned_allocator:
        tune_allocator()
    if args.alone:
        block_other_frameworks(os.environ.get("KERAS_BACKEND", "jax"))
    # The reference's process imports neither Keras nor what Keras imports.
    if args.peer == "reference":
        import torch  # noqa: F401
    else:
        import keras  # noqa: F401 (imports the backend's framework)
    _set_tf32(args.tf32)
    result = {"run_ours": run_ours, "run_reference": run_reference, "run_keras_hub": run_keras_hub}[
        f"run_{args.peer}"
    ](args.image_size, args.repeats)
    if result is not None:
        result["peak_rss_gb"] = _peak_rss_gb()
        result["tuned_allocator"] = args.tuned_allocator
        result["loaded_frameworks"] = sorted(
            n for n in ("jax", "tensorflow", "torch") if sys.modules.get(n) is not None
        )
        result["backend"] = "torch" if args.peer == "reference" else sys.modules["keras"].backend.backend()
        result["device"] = _device_name()
        result["tf32"] = args.tf32 if result["device"] != "cpu" else None
    print("RESULT " + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--peers", default=",".join(PEERS), help="subset of " + ",".join(PEERS))
    parser.add_argument(
        "--alone",
        action="store_true",
        help="also run ours with the other backends' frameworks blocked (an install with one backend)",
    )
    parser.add_argument(
        "--tuned-allocator",
        action="store_true",
        help="every process, ours and the peers alike, starts with keras_sam3.tune_cpu_allocator() "
        "(glibc keeps large freed blocks for reuse)",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="on a GPU, let every peer's float32 matrix products use TF32 (default: full float32)",
    )
    parser.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        return worker(args)
    for backend in args.backends.split(","):
        if backend not in ("jax", "tensorflow", "torch"):
            parser.error(f"--backends: unknown backend {backend!r} (jax, tensorflow, torch)")
    for peer in args.peers.split(","):
        if peer not in PEERS:
            parser.error(f"--peers: unknown peer {peer!r} ({', '.join(PEERS)})")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    table = {}
    failed = []
    for backend in args.backends.split(","):
        runs = [(peer, False) for peer in args.peers.split(",")]
        if args.alone and "ours" in args.peers.split(","):
            runs.append(("ours", True))
        for peer, alone in runs:
            if peer == "reference" and "reference" in table:
                continue  # PyTorch eager: the same whatever KERAS_BACKEND says
            name = "reference" if peer == "reference" else f"{peer}:{backend}" + (" alone" if alone else "")
            print(f"[{backend}] {name} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, f"--peer={peer}", f"--image-size={args.image_size}", f"--repeats={args.repeats}"]
                + (["--alone"] if alone else [])
                + (["--tuned-allocator"] if args.tuned_allocator else [])
                + (["--tf32"] if args.tf32 else []),
                env=dict(os.environ, KERAS_BACKEND=backend),
                capture_output=True,
                text=True,
            )
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
                print(f"[{backend}] {name} failed (exit {proc.returncode})", file=sys.stderr)
                failed.append(name)
                continue
            result = json.loads(lines[-1][len("RESULT ") :])
            print(f"[{backend}] {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
            if result:
                result["image_size"], result["repeats"] = args.image_size, args.repeats
                table[name] = result
                if args.json:  # as it goes: a run cut by a time limit keeps what it measured
                    with open(args.json, "w") as f:
                        json.dump(table, f, indent=2)

    ref = table.get("reference")
    print(f"\nFull forward, default architecture, {args.image_size} px, batch 1, text prompt; "
          f"median of {args.repeats} steady calls (seconds), peak RSS (GB); 'model RSS' is the peak after "
          f"the full forward less the RSS after the imports (the frameworks a process loads, which differ "
          f"between the peers: ours loads Keras, keras-hub and what they import)"
          + ("; every process with keras_sam3.tune_cpu_allocator()" if args.tuned_allocator else "") + "\n")
    print(
        "| implementation | first | steady | steady / reference | peak RSS, full forward | RSS / reference "
        "| RSS after imports | model RSS | model RSS / reference | peak RSS, whole run | encode | one prompt | prompt / full | encode + 4 prompts / full "
        "| encode + 4 single prompts / full |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in table.items():
        ratio = f"{r['steady_s'] / ref['steady_s']:.2f}x" if ref else "n/a"
        full_rss = r.get("full_rss_gb", r["peak_rss_gb"])
        mem = f"{full_rss / ref.get('full_rss_gb', ref['peak_rss_gb']):.2f}x" if ref else "n/a"
        imports = r.get("imports_rss_gb")
        model = None if imports is None else full_rss - imports
        ref_model = ref and ref.get("imports_rss_gb") is not None and ref["full_rss_gb"] - ref["imports_rss_gb"]
        model_ratio = f"{model / ref_model:.2f}x" if model is not None and ref_model else "n/a"
        imports = "n/a" if imports is None else f"{imports:.2f}"
        model = "n/a" if model is None else f"{model:.2f}"
        enc = f"{r['encode_s']:.3f}" if "encode_s" in r else "n/a"
        one = f"{r['prompt_s']:.3f}" if "prompt_s" in r else "n/a"
        share = f"{r['prompt_s'] / r['steady_s']:.1%}" if "prompt_s" in r else "n/a"
        four = (
            f"{(r['encode_s'] + r['four_prompts_s']) / r['steady_s']:.2f}x" if "four_prompts_s" in r else "n/a"
        )
        single = (
            f"{(r['encode_s'] + 4 * r['prompt_s']) / r['steady_s']:.2f}x" if "four_prompts_s" in r else "n/a"
        )
        print(
            f"| {name} | {r['first_s']:.2f} | {r['steady_s']:.3f} | {ratio} | {full_rss:.2f} | {mem} "
            f"| {imports} | {model} | {model_ratio} | {r['peak_rss_gb']:.2f} | {enc} | {one} | {share} | {four} | {single} |"
        )
    on_device = {name: r for name, r in table.items() if r.get("full_device_gb") is not None}
    if on_device:
        ref_device = ref and ref.get("full_device_gb")
        print(f"\nOn the GPU (TF32 {'on' if args.tf32 else 'off'}): peak device memory of the full forward (GB)\n")
        print("| implementation | device | steady | device peak, full forward | device peak / reference |")
        print("|---|---|---:|---:|---:|")
        for name, r in on_device.items():
            share = f"{r['full_device_gb'] / ref_device:.2f}x" if ref_device else "n/a"
            print(f"| {name} | {r['device']} | {r['steady_s']:.4f} | {r['full_device_gb']:.2f} | {share} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
