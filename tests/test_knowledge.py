"""Where the knowledge sits, and a lightweight model that inherits every layer: each new row's starting weights
stated from first principles. A rung of the ladder holds exactly the source's weights in its first K conv blocks and,
after them and in the head, the fresh weights of the run's own seeded initialisation, the same for every rung of a
task; the capacity control holds no source weight at all; the window row holds the source's window and nothing else
of it; the lightweight model holds, in each of its seven conv blocks, the source block of its shape and a head drawn
as every other row's of the task; EWC holds its inherited blocks and nothing else."""
import json

import pytest
import torch
from conftest import assert_clean_error, run_script

from utils import contrasts, fewshot, learngene, methods
from utils.cli import UserError
from utils.joint import load as load_joint
from utils.models import POOL_AFTER, CollectiveNet, IndividualNet, widths_at
from utils.runstore import RunKey
from utils.splits import Split

BLOCK = learngene.BLOCK_TENSORS


@pytest.fixture
def inputs(collective_run, joint_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split = Split(tiny_split)
    return methods.Inputs(art, "", methods.load_collective(None, art, split), load_joint(joint_run / "joint.pt", art, split))


def built(method, inputs, seed=7):
    """The method's fresh model as a run of one task builds it (the generator seeded per task)."""
    torch.manual_seed(seed)
    model, layers = methods.build_model(method, inputs, inputs.learngene["image_size"])
    return model.state_dict(), layers


def same_block(state, i, source, j):
    return all(torch.equal(state[f"features.{i}.{n}"], source[f"features.{j}.{n}"]) for n in BLOCK)


def shares_nothing(state, i, source):
    """Block i holds none of the source's block i: every tensor differs (BatchNorm's fresh running statistics are 0 and
    1, its fresh weight 1 and bias 0, which a trained source does not hold either)."""
    return all(not torch.equal(state[f"features.{i}.{n}"], source[f"features.{i}.{n}"]) for n in BLOCK)


@pytest.mark.parametrize("source", ["collective", "joint"])
def test_a_rung_holds_the_sources_first_k_blocks_and_the_runs_fresh_weights_after_them(inputs, source):
    src = (inputs.joint if source == "joint" else inputs.collective)["model"]
    control, layers = built("scratch-collective", inputs)
    assert layers is None and all(shares_nothing(control, i, src) for i in range(13))  # no source weight at all
    assert all(not torch.equal(control[k], src[k]) for k in control if k.startswith("head.") and k in src
               and control[k].shape == src[k].shape)
    for k in methods.LADDER:
        rung, layers = built(f"first{k}-{source}", inputs)
        assert layers == list(range(k))
        for i in range(13):
            if i < k:
                assert same_block(rung, i, src, i), (k, i)
            else:  # the fresh weights: the capacity control's, drawn from the same seed
                assert all(torch.equal(rung[f"features.{i}.{n}"], control[f"features.{i}.{n}"]) for n in BLOCK), (k, i)
        assert all(torch.equal(rung[name], control[name]) for name in rung if name.startswith("head."))
    other_task, _ = built(f"first{methods.LADDER[0]}-{source}", inputs, seed=8)
    last = methods.LADDER[0]
    assert not torch.equal(other_task[f"features.{last}.conv.weight"], control[f"features.{last}.conv.weight"])


@pytest.mark.parametrize("source", ["collective", "joint"])
def test_the_window_row_holds_the_sources_learngene_window_and_nothing_else_of_it(inputs, source):
    src = (inputs.joint if source == "joint" else inputs.collective)["model"]
    window = inputs.learngene["layers"]
    control, _ = built("scratch-collective", inputs)
    model, layers = built(f"window-{source}", inputs)
    assert layers == window
    for i in range(13):
        if i in window:
            assert same_block(model, i, src, i)
        else:
            assert all(torch.equal(model[f"features.{i}.{n}"], control[f"features.{i}.{n}"]) for n in BLOCK)
    assert all(torch.equal(model[name], control[name]) for name in model if name.startswith("head."))


def test_the_whole_fine_tune_keeps_the_heads_hidden_layers_and_only_its_output_is_new(inputs):
    src = inputs.collective["model"]
    model, _ = built("finetune-collective", inputs)
    last = max(int(k.split(".")[1]) for k in model if k.startswith("head."))
    for name, value in model.items():
        if name.startswith(f"head.{last}."):
            assert value.shape[0] == 5
        else:
            assert torch.equal(value, src[name]), name


def test_the_full_inheritance_map_takes_for_each_block_the_deepest_layer_of_its_shape_below_the_next():
    """At the cpu preset's extraction widths (after task 20), with the learngene at layers 10-12: the issue's map."""
    widths = widths_at(20)
    blocks = [[widths[i - 1], widths[i], i in POOL_AFTER] for i in (10, 11, 12)]
    shapes = IndividualNet(blocks, 32).conv_shapes()
    assert methods.full_inheritance_layers(shapes, [10, 11, 12], widths) == [0, 2, 4, 7, 10, 11, 12]
    # base widths: the individual model's 128->256 block has no layer of its shape below the 256->512 one
    with pytest.raises(UserError, match="no 256->512 conv layer below layer 10"):
        methods.full_inheritance_layers(shapes, [10, 11, 12], [64] * 4 + [128] * 3 + [256] * 6)
    # two layers of a shape: the deeper one, nearer to the block it feeds (128->256 at conv 4 and at conv 6)
    w = [64, 64, 128, 128, 256, 128, 256, 512, 512, 512, 512, 512, 512]
    assert methods.full_inheritance_layers(shapes, [10, 11, 12], w) == [0, 2, 6, 7, 10, 11, 12]


@pytest.mark.parametrize("method, source", [("learngene-full", "collective"), ("learngene-full-joint", "joint")])
def test_the_lightweight_model_holds_its_mapped_source_block_in_every_conv_block_and_a_fresh_head(inputs, method,
                                                                                                   source):
    src = inputs.joint if source == "joint" else inputs.collective
    model, layers = built(method, inputs)
    shapes = IndividualNet(inputs.learngene["blocks"], 32).conv_shapes()
    assert layers == methods.full_inheritance_layers(shapes, inputs.learngene["layers"], src["widths"])
    assert layers[-3:] == inputs.learngene["layers"] and len(layers) == 7
    names = [f"front.{j}" for j in range(4)] + [f"inherited.{j}" for j in range(3)]
    for name, i in zip(names, layers):
        for n in BLOCK:
            assert torch.equal(model[f"{name}.{n}"], src["model"][f"features.{i}.{n}"]), (name, i, n)
    scratch, _ = built("scratch", inputs)  # the head: every row of the task draws the same
    assert all(torch.equal(model[k], scratch[k]) for k in model if k.startswith("head."))
    if source == "collective":  # the learngene's own blocks are the learngene's
        lg, _ = built("learngene", inputs)
        assert all(torch.equal(model[k], lg[k]) for k in model if k.startswith("inherited."))


def test_ewc_holds_every_inherited_block_of_the_lightweight_model_and_nothing_else(inputs, tiny_split):
    cpu = torch.device("cpu")
    train, _ = fewshot.FewShotData(Split(tiny_split), "target", cpu)(4, 0)
    settings = fewshot.TrainSettings(precision="fp32", ewc_lambda=7.0)
    model, layers, ewc = fewshot.prepare(RunKey("learngene-full", 4, 0, 0), inputs, train, settings, cpu)
    held = {n for n, _ in model.named_parameters() if n.startswith(("front.", "inherited."))}
    assert ewc is not None and set(ewc.fisher) == held and len(layers) == 7
    params = dict(model.named_parameters())
    assert all(torch.equal(ewc.anchor[n], params[n].detach()) for n in held)
    assert fewshot.prepare(RunKey("learngene-full-noewc", 4, 0, 0), inputs, train, settings, cpu)[2] is None
    _, _, lg = fewshot.prepare(RunKey("learngene", 4, 0, 0), inputs, train, settings, cpu)
    assert set(lg.fisher) == {n for n in held if n.startswith("inherited.")}  # the learngene's: its blocks only


def test_each_row_reads_only_the_inputs_it_starts_from():
    identity = {"epochs": 30, "lr": 0.005, "ewc_lambda": 4e4, "learngene_sha256": "L", "learngene_layers": [10, 11, 12],
                "learngene_shapes": "ls", "collective_sha256": "C", "collective_shapes": "cs", "joint_sha256": "J"}
    reads = {m: methods.reads(m, identity) for m in methods.METHODS}
    assert {"collective_sha256", "learngene_sha256", "joint_sha256"} & set(reads["scratch-collective"]) == set()
    assert "collective_shapes" in reads["scratch-collective"]
    assert "collective_sha256" in reads["first4-collective"] and "learngene_layers" not in reads["first4-collective"]
    assert {"joint_sha256"} <= set(reads["first4-joint"]) and "collective_sha256" not in reads["first4-joint"]
    assert {"collective_sha256", "learngene_layers"} <= set(reads["window-collective"])
    assert {"collective_sha256", "learngene_layers", "ewc_lambda"} <= set(reads["learngene-full"])
    assert {"joint_sha256", "learngene_layers"} <= set(reads["learngene-full-joint"])
    assert "ewc_lambda" not in reads["learngene-full-noewc"]


def test_tuned_contrasts_pair_rows_at_their_own_rates_and_refuse_other_differences(tmp_path):
    """The knowledge and inherit studies give each row the rate and number of epochs its validation tasks chose: their
    contrasts pair runs whose learning rates and epochs differ, and nothing else may differ."""
    def line(method, task, acc, lr, epochs=30, batch_size=32):
        settings = {"epochs": 30, "epochs_of": {method: epochs}, "batch_size": batch_size, "momentum": 0.9, "weight_decay": 5e-4, "precision": "fp32",
                    "section": "target", "split_hash": "s", "lr": 0.005, "lr_of": {method: lr}, "ewc_lambda": 4e4}
        return json.dumps({"settings": settings, "result": {"method": method, "shots": 10, "task": task, "seed": 0,
                                                            "final_acc": acc}})
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join([line("scratch-collective", t, 40.0 + t, 0.001) for t in range(3)]
                              + [line("first4-collective", t, 43.0 + 2 * t, 0.02) for t in range(3)]) + "\n")
    runs = contrasts.read_folders([path])
    with pytest.raises(UserError, match="other settings"):
        contrasts.contrast_rows(runs, contrasts.LADDER)
    rows = contrasts.contrast_rows(runs, contrasts.LADDER, own_schedule=True)
    assert [(r[1], r[2], r[4]) for r in rows] == [("first4-collective", "scratch-collective", 3)]
    assert rows[0][5] == pytest.approx(4.0)  # (3 + 4 + 5) / 3
    path.write_text("\n".join([line("scratch-collective", t, 40.0, 0.001) for t in range(3)]
                              + [line("first4-collective", t, 43.0, 0.02, epochs=60) for t in range(3)]) + "\n")
    assert contrasts.contrast_rows(contrasts.read_folders([path]), contrasts.LADDER, own_schedule=True)
    path.write_text("\n".join([line("scratch-collective", t, 40.0, 0.001) for t in range(3)]
                              + [line("first4-collective", t, 43.0, 0.02, batch_size=64) for t in range(3)]) + "\n")
    with pytest.raises(UserError, match="batch_size"):
        contrasts.contrast_rows(contrasts.read_folders([path]), contrasts.LADDER, own_schedule=True)


def test_a_source_without_a_layer_of_some_blocks_shape_is_refused_in_one_line(collective_run, tiny_split, tmp_path):
    """A collective checkpoint whose conv widths give a block of the lightweight model no layer of its shape is
    refused before anything trains or is written."""
    ck = torch.load(collective_run / "checkpoints" / "task_002.pt", weights_only=True)
    ck["widths"] = [64] * 13  # a whole, consistent network, only narrower everywhere
    ck["model"] = CollectiveNet(ck["widths"], ck["config"]["image_size"], ck["config"]["num_outputs"]).state_dict()
    torch.save(ck, tmp_path / "narrow.pt")
    proc = run_script("individual-model/inheritable_imagenet_wEWC.py", "--path", tiny_split, "--learngene",
                      collective_run / "learngene.pt", "--collective", tmp_path / "narrow.pt", "--methods",
                      "learngene-full", "--epochs", "1", "--num_works_tt", "1", "--out", tmp_path / "o", "--no-cuda")
    assert_clean_error(proc, "conv layer below layer")
    assert not (tmp_path / "o").exists()


def test_a_methods_own_number_of_epochs_is_what_it_trains_and_what_its_runs_read(collective_run, tiny_split,
                                                                                tmp_path):
    proc = run_script("individual-model/inheritable_imagenet_wEWC.py", "--path", tiny_split, "--learngene",
                      collective_run / "learngene.pt", "--methods", "scratch", "learngene", "--epochs", "1",
                      "--epochs_of", "scratch=2", "learngene=1", "--num_works_tt", "1", "--num_imgs_per_cat_train", "2",
                      "--batch_size", "4", "--out", tmp_path / "o", "--no-cuda")
    assert proc.returncode == 0, proc.stderr
    runs = {r["result"]["method"]: r for r in map(json.loads, (tmp_path / "o" / "runs.jsonl").open())}
    assert runs["scratch"]["result"]["curve"][-1][0] == 2 and runs["learngene"]["result"]["curve"][-1][0] == 1
    assert runs["scratch"]["settings"]["epochs_of"] == {"scratch": 2}  # learngene's equals --epochs: not recorded
    assert methods.reads("scratch", runs["scratch"]["settings"])["epochs"] == 2
    assert methods.reads("learngene", runs["learngene"]["settings"])["epochs"] == 1
    assert "scratch 2 (a method's own schedule: --epochs_of)" in (tmp_path / "o" / "results.md").read_text()
