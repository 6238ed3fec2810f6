"""keras_sam3 needs only the framework of the backend it runs on.

Keras imports JAX and keras-hub imports TensorFlow whenever they are
installed (0.5-0.7 GB of resident memory, docs/benchmarks.md); an install
with one backend's framework must still segment. The other frameworks are
blocked in a fresh interpreter with `sys.modules[name] = None`, which makes
their import fail as it does when they are not installed (the same block
as `tools/benchmark_segmenter.py --alone`).
"""

import json
import os
import subprocess
import sys

import keras

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
sys.path.insert(0, TOOLS)
from benchmark_segmenter import OTHER_FRAMEWORKS  # noqa: E402

from tests.test_embedded_preset import EXAMPLE_SEED  # noqa: E402

SCRIPT = """
import json, sys
sys.path.insert(0, {tools!r})
from benchmark_segmenter import block_other_frameworks
block_other_frameworks({backend!r})
import numpy as np
from keras_sam3 import SAM3PromptableConceptImageSegmenter
from keras_sam3.data.synthetic_shapes import ShapesGenerator
segmenter = SAM3PromptableConceptImageSegmenter.from_preset("sam3_shapes")
image, _ = ShapesGenerator(seed={seed}).scene()
results = segmenter.segment([image, image], ["triangle", "red circle"], threshold=0.5)
print("RESULT " + json.dumps({{
    "loaded": sorted(n for n in ("jax", "tensorflow", "torch") if sys.modules.get(n) is not None),
    "instances": [len(r["scores"]) for r in results],
    "mask_shape": list(np.asarray(results[0]["masks"]).shape[1:]),
    "image_shape": list(image.shape[:2]),
}}))
"""


def test_segments_with_the_other_backends_frameworks_missing():
    backend = keras.backend.backend()
    blocked = OTHER_FRAMEWORKS[backend]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tools=TOOLS, backend=backend, seed=EXAMPLE_SEED)],
        env=dict(os.environ, KERAS_BACKEND=backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert not set(result["loaded"]) & set(blocked), result
    assert backend in result["loaded"]
    assert result["mask_shape"] == result["image_shape"]
    assert all(n > 0 for n in result["instances"]), result  # the README's example finds both
