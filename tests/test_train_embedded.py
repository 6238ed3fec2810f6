"""tools/train_embedded.py: the loss phases of one training command."""

import argparse
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool():
    spec = importlib.util.spec_from_file_location("train_embedded", os.path.join(ROOT, "tools", "train_embedded.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def args(**overrides):
    values = dict(
        soft_targets=False,
        positive_weight=10.0,
        cost_mask=0.0,
        cost_dice=0.0,
        bbox_weight=5.0,
        giou_weight=2.0,
        presence_weight=20.0,
        meta_negatives=False,
        negatives_after=2000,
        negatives_ramp=0,
        late_positive_weight=None,
        late_after=0,
        o2m_weight=0.0,
        o2m_topk=4,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def test_negatives_start_after_the_first_phase():
    plan = load_tool().phases(args())
    assert [first for first, _ in plan] == [0, 2000]
    assert [kw["negative_prompts"] for _, kw in plan] == [False, True]
    assert all(kw["positive_weight"] == 10.0 and kw["soft_targets"] is False for _, kw in plan)
    assert all(kw["presence_weight"] == 20.0 for _, kw in plan)


def test_meta_negatives_and_a_late_positive_weight():
    tool = load_tool()
    plan = tool.phases(args(meta_negatives=True))
    assert len(plan) == 1 and plan[0][1]["negative_prompts"] is False
    plan = tool.phases(args(late_positive_weight=3.0, late_after=5000))
    assert [(first, kw["negative_prompts"], kw["positive_weight"]) for first, kw in plan] == [
        (0, False, 10.0),
        (2000, True, 10.0),
        (5000, True, 3.0),
    ]
    # Both changes at step 0: one phase with both.
    plan = tool.phases(args(negatives_after=0, late_positive_weight=3.0, late_after=0))
    assert [(first, kw["negative_prompts"], kw["positive_weight"]) for first, kw in plan] == [(0, True, 3.0)]


def test_absent_concepts_can_be_brought_in_over_a_ramp():
    plan = load_tool().phases(args(negatives_after=1500, negatives_ramp=2000, late_positive_weight=5.0, late_after=3250))
    assert [(first, kw["negative_prompts"], kw["positive_weight"]) for first, kw in plan] == [
        (0, False, 10.0),
        (1500, 0.25, 10.0),
        (2000, 0.5, 10.0),
        (2500, 0.75, 10.0),
        (3000, 1.0, 10.0),
        (3250, 1.0, 5.0),
    ]
    from keras_sam3.losses import SAM3Loss

    assert [SAM3Loss(**kw).negative_weight for _, kw in plan] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_the_one_to_many_branch_reaches_every_phase():
    tool = load_tool()
    assert all(kw["o2m_weight"] == 0.0 for _, kw in tool.phases(args()))
    plan = tool.phases(args(o2m_weight=2.0, o2m_topk=6))
    assert len(plan) == 2 and all(kw["o2m_weight"] == 2.0 and kw["o2m_topk"] == 6 for _, kw in plan)
    from keras_sam3.losses import SAM3Loss

    assert SAM3Loss(**plan[-1][1]).o2m_weight == 2.0


def test_architecture_knobs_default_to_the_shipped_model():
    tool = load_tool()
    vocabulary = tool.shapes_tokenizer(tool.SEQUENCE_LENGTH).vocabulary_size
    assert tool.embedded_backbone(vocabulary).count_params() == 2_078_382  # presets/sam3_shapes.json
    deeper = tool.embedded_backbone(vocabulary, detr_encoder_layers=3, text_layers=3)
    assert deeper.detr_encoder.num_layers == 3 and deeper.text_encoder.num_layers == 3
    assert deeper.count_params() > 2_078_382
    assert tool.embedded_backbone(vocabulary, width=96).mask_decoder.hidden_dim == 96
    coarse = tool.embedded_backbone(vocabulary, patch_size=16)
    assert coarse.vision_encoder.get_config()["patch_size"] == 16
    # The patch embedding's kernel grows 4x, the position-embedding grid
    # shrinks from 16 x 16 to 8 x 8; the rest is unchanged.
    assert coarse.count_params() == 2_078_382 + 3 * 128 * (16 * 16 - 8 * 8) - 128 * (16 * 16 - 8 * 8)


def test_a_short_run_keeps_to_its_steps_its_data_order_and_saves(tmp_path, monkeypatch, capsys):
    """`--max-steps` below `--negatives-after`: three steps, not six, and
    only the phase that ran is recorded; batches in stream order from
    `--data-offset` (Keras shuffles a PyDataset's by default); the save
    every 2 steps works mid-epoch (on JAX the weights live outside the
    variables then), and `--keep-saves` keeps them."""
    import json
    import sys

    import numpy as np
    import pytest

    tool = load_tool()
    seen = []

    class Recording(tool.SyntheticShapesDataset):
        def __getitem__(self, index):
            seen.append(self.offset + index)
            return super().__getitem__(index)

    saves = []
    original_save = tool.SAM3PromptableConceptImageSegmenter.save_to_preset

    def save(self, directory, **kwargs):
        saves.append(directory)
        return original_save(self, directory, **kwargs)

    monkeypatch.setattr(tool, "SyntheticShapesDataset", Recording)
    monkeypatch.setattr(tool.SAM3PromptableConceptImageSegmenter, "save_to_preset", save)
    output = str(tmp_path / "run")
    command = "--max-steps 3 --negatives-after 6 --batch-size 1 --warmup-steps 1 --save-every 2 --data-offset 100"
    monkeypatch.setattr(sys, "argv", ["train_embedded.py", *command.split(), "--keep-saves", "--output", output])
    tool.main()
    with open(os.path.join(output, "training.json")) as f:
        record = json.load(f)
    assert record["steps"] == 3
    assert [phase["first_step"] for phase in record["phases"]] == [0]
    # TensorFlow's PyDataset adapter first reads a batch or two for their
    # signature; the training run's reads come last.
    assert seen[-3:] == [100, 101, 102] and set(seen) == {100, 101, 102}
    assert saves == [output, output]  # at step 2, and at the end
    assert os.path.exists(os.path.join(output, "model.weights.h5"))
    # --keep-saves: step 2's save kept beside the output, a preset of its own
    assert sorted(os.listdir(tmp_path)) == ["run", "run-step2"]
    kept = tool.SAM3PromptableConceptImageSegmenter.from_preset(output + "-step2")
    final = tool.SAM3PromptableConceptImageSegmenter.from_preset(output)
    assert kept.backbone.count_params() == final.backbone.count_params()
    differ = [
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(kept.backbone.trainable_weights, final.backbone.trainable_weights)
    ]
    assert any(differ)  # step 3 trained on after the kept save
    # A second run would overwrite the kept save: refused before training.
    with pytest.raises(SystemExit):
        tool.main()
    assert "--keep-saves would overwrite" in capsys.readouterr().err


def test_seeds_of_the_evaluation_streams_are_refused(monkeypatch, capsys):
    import sys

    import pytest

    tool = load_tool()
    for seed in ("7", "2026"):
        monkeypatch.setattr(sys, "argv", ["train_embedded.py", "--seed", seed, "--output", "unused"])
        with pytest.raises(SystemExit):
            tool.main()
        assert "evaluation stream" in capsys.readouterr().err


def test_a_patch_size_other_than_8_or_16_is_refused(monkeypatch, capsys):
    import sys

    import pytest

    tool = load_tool()
    monkeypatch.setattr(sys, "argv", ["train_embedded.py", "--patch-size", "10", "--output", "unused"])
    with pytest.raises(SystemExit):
        tool.main()
    assert "--patch-size" in capsys.readouterr().err


def test_the_best_started_candidate_goes_on_as_its_own_seed_would(tmp_path, monkeypatch):
    """`--select-from 2`: seeds 3 and 4 train two steps each, the one whose
    top query finds the prompted objects better (as measured) goes on, and
    the run ends with the weights and record that `--seed <chosen>` alone
    gives: selection adds a choice, not another training path."""
    import json
    import sys

    import numpy as np

    tool = load_tool()
    measured = []
    original_measure = tool.top_query_iou

    def measure(segmenter, samples, seed):
        value = original_measure(segmenter, samples, seed)
        measured.append(value)
        return value

    monkeypatch.setattr(tool, "top_query_iou", measure)
    common = "--max-steps 3 --negatives-after 1 --batch-size 1 --warmup-steps 1 --save-every 0 --select-samples 3"

    def run(output, *extra):
        monkeypatch.setattr(sys, "argv", ["train_embedded.py", *common.split(), *extra, "--output", str(output)])
        tool.main()
        with open(os.path.join(output, "training.json")) as f:
            return json.load(f)

    record = run(tmp_path / "selected", "--seed", "3", "--select-from", "2", "--select-after", "2")
    assert len(measured) == 2 and all(0.0 <= value <= 1.0 for value in measured)
    chosen = 3 + int(np.argmax(measured))
    selection = record["selection"]
    assert [c["seed"] for c in selection["candidates"]] == [3, 4]
    assert selection["chosen_seed"] == chosen == record["seed"]
    assert record["steps"] == 3
    # the chosen seed's phases: negatives from step 1, recorded once
    assert [phase["first_step"] for phase in record["phases"]] == [0, 1]

    alone = run(tmp_path / "alone", "--seed", str(chosen))
    assert alone["selection"] is None and alone["phases"] == record["phases"]
    selected = tool.SAM3PromptableConceptImageSegmenter.from_preset(str(tmp_path / "selected"))
    single = tool.SAM3PromptableConceptImageSegmenter.from_preset(str(tmp_path / "alone"))
    for a, b in zip(selected.backbone.weights, single.backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_selection_refuses_what_it_cannot_do(monkeypatch, capsys):
    import sys

    import pytest

    tool = load_tool()
    for command, message in (
        ("--select-from 2 --select-after 50 --max-steps 50", "--select-after"),
        ("--select-from 2 --select-after 0", "--select-after"),
        ("--select-from 0", "--select-from"),
        ("--seed 10 --select-from 2", "evaluation stream"),  # candidate seed 11 is the selection's stream
        ("--seed 2025 --select-from 3", "evaluation stream"),
    ):
        monkeypatch.setattr(sys, "argv", ["train_embedded.py", *command.split(), "--output", "unused"])
        with pytest.raises(SystemExit):
            tool.main()
        assert message in capsys.readouterr().err, command
