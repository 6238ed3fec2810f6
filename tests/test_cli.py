import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from keras_sam3.cli import mask_to_rle
from tests.models.tiny import tiny_segmenter

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _decode(rle):
    values, flat = False, []
    for count in rle["counts"]:
        flat += [values] * count
        values = not values
    return np.array(flat, bool).reshape(rle["size"], order="F")


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for mask in (rng.random((7, 5)) > 0.5, np.ones((3, 4), bool), np.zeros((2, 2), bool)):
        np.testing.assert_array_equal(_decode(mask_to_rle(mask)), mask)


def test_segment_command_writes_overlay_and_json(tmp_path):
    preset = str(tmp_path / "preset")
    tiny_segmenter().save_to_preset(preset)
    image = tmp_path / "shapes.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3)).astype("uint8")).save(image)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "keras_sam3", str(image),
        "--prompt", "red circle", "--prompt", "square",
        "--box", "5,5,30,40", "--box", "40,10,60,30:0",
        "--preset", preset, "--output-dir", str(out), "--threshold", "0",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "encoding" in result.stdout and "2 prompt(s)" in result.stdout
    overlay = Image.open(out / "shapes_overlay.png")
    assert overlay.size == (70, 50)
    record = json.loads((out / "shapes_instances.json").read_text())
    assert record["size"] == [50, 70]
    instances = record["instances"]
    assert len(instances) == 10  # 5 queries x 2 prompts, threshold 0
    assert {i["prompt"] for i in instances} == {"red circle", "square"}
    for inst in instances:
        mask = _decode(inst["mask_rle"])
        assert mask.shape == (50, 70) and mask.sum() == inst["mask_area"]
        assert 0 <= inst["score"] <= 1 and len(inst["box"]) == 4

    # The command keeps freed memory for reuse unless told not to; the
    # allocator changes no number.
    plain = tmp_path / "plain"
    result = subprocess.run(
        command[:-4] + ["--output-dir", str(plain), "--threshold", "0", "--default-allocator"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((plain / "shapes_instances.json").read_text()) == record


def test_same_file_names_keep_their_own_results_and_exif_turns_images_upright(tmp_path):
    from keras_sam3 import cli

    preset = str(tmp_path / "preset")
    tiny_segmenter().save_to_preset(preset)
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        os.makedirs(tmp_path / folder)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3)).astype("uint8")).save(tmp_path / "a" / "photo.png")
    # Stored 60 wide and 40 high; EXIF orientation 6: shown rotated, 40 x 60.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = rng.integers(0, 256, (40, 60, 3)).astype("uint8")
    Image.fromarray(rotated).save(tmp_path / "b" / "photo.jpg", exif=exif.tobytes())
    out = tmp_path / "out"
    paths = [str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.jpg")]
    code = cli.main(paths + ["--prompt", "square", "--preset", preset, "--output-dir", str(out),
                             "--threshold", "0", "--default-allocator"])
    assert code == 0
    first = json.loads((out / "photo_instances.json").read_text())
    second = json.loads((out / "photo-2_instances.json").read_text())
    assert first["image"] == paths[0] and first["size"] == [50, 70]
    assert second["image"] == paths[1] and second["size"] == [60, 40]
    assert Image.open(out / "photo-2_overlay.png").size == (40, 60)
    assert _decode(second["instances"][0]["mask_rle"]).shape == (60, 40)
    assert cli.output_stems(["x/p.png", "y/p.png", "p-2.png", "z/p.jpg"]) == ["p", "p-2", "p-2-2", "p-3"]


def test_command_needs_a_prompt_or_box(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_sam3", "x.png"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)),
    )
    assert result.returncode == 2 and "--prompt, --box or --point" in result.stderr


def test_click_command_uses_the_tracker(tmp_path):
    from tests.parity import reference as ref_lib

    checkpoint = ref_lib.make_reference_video_checkpoint(tmp_path / "ckpt", seed=9)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3)).astype("uint8")).save(image)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable, "-m", "keras_sam3", str(image),
            "--point", "30,20", "--point", "5,40:0", "--box", "2,2,60,45",
            "--preset", checkpoint, "--output-dir", str(out),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((out / "photo_instances.json").read_text())
    (instance,) = record["instances"]
    assert instance["prompt"] == "click" and 0 <= instance["score"] <= 1
    assert _decode(instance["mask_rle"]).shape == (48, 64)
    assert Image.open(out / "photo_overlay.png").size == (64, 48)


def test_command_line_mistakes_are_named_before_any_model_loads(tmp_path):
    """A missing image, a box or click label other than 0 / 1, a
    non-numeric coordinate and an NMS threshold outside [0, 1] or with clicks
    stop at argument parsing (exit 2) with a message,
    not with a traceback after minutes of loading."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(image)
    cases = [
        (["missing.png", "--prompt", "a"], "no such image file: missing.png"),
        ([str(image), "--box", "1,2,3,4:2"], "the label is 1 (positive) or 0 (negative)"),
        ([str(image), "--point", "a,b"], "a point is x,y[:label], numbers in pixels"),
        ([str(image), "--point", "1,2:3"], "the label is 1 (positive) or 0 (negative)"),
        ([str(image), "--prompt", "a", "--nms-threshold", "1.5"], "the NMS threshold is a mask IoU in [0, 1]"),
        ([str(image), "--prompt", "a", "--nms-threshold", "x"], "the NMS threshold is a mask IoU in [0, 1]"),
        ([str(image), "--point", "1,2", "--nms-threshold", "0.5"], "--nms-threshold applies to concept prompts"),
    ]
    for argv, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "keras_sam3", *argv, "--preset", "no-such-preset", "--output-dir", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2 and message in done.stderr, (argv, done.stderr[-500:])
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "o").exists()
