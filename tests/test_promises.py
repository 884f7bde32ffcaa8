"""The README's scientific promises, each stated as a test from first principles (not as two code paths that
agree): the criterion's per-layer statistics and rule, the extraction task, the shared initialisation and batch
order of the paired methods, the labels of every task's images, EWC's scope, and the independence of the split's
random streams. tests/mutations.py breaks each on purpose and checks that the suite notices."""
import csv
import hashlib
import json
import re
import shutil
import statistics

import pytest
import torch
from conftest import TINY, printed_agrees, printed_numbers, run_script

from utils import criterion, fewshot, learngene, methods
from utils.engine import batch_indices
from utils.runstore import RunKey
from utils.split_maker import open_raw
from utils.splits import Split


def test_criterion_scores_are_mean_plus_std_over_tasks_of_per_task_means(collective_run):
    """Per layer: the statistic averaged over each task's epochs; over tasks its mean plus its (population)
    standard deviation; a window's score is the mean of its layers'; the learngene is the lowest window."""
    per_task = {}
    for r in csv.DictReader(open(collective_run / "criterion.csv")):
        per_task.setdefault((int(r["layer"]), int(r["task"])), []).append(float(r["value"]))
    layers = sorted({layer for layer, _ in per_task})
    tasks = sorted({task for _, task in per_task})
    score = {}
    for layer in layers:
        values = [statistics.fmean(per_task[layer, t]) for t in tasks]
        score[layer] = statistics.fmean(values) + statistics.pstdev(values)
    windows = {s: statistics.fmean(score[s + i] for i in range(3)) for s in range(1, len(layers) - 2)}
    art = learngene.load(collective_run / "learngene.pt")
    recorded = {int(s): v for s, v in art["criterion"]["windows"].items()}
    assert recorded.keys() == windows.keys()
    for s in windows:
        assert recorded[s] == pytest.approx(windows[s], abs=1e-6)  # criterion.csv rounds its values
    start = max(s for s in windows if windows[s] == min(windows.values()))  # an exact tie: the deeper window
    assert art["layers"] == [start, start + 1, start + 2]
    printed = {}  # the printed per-layer table: layer, mean, std, score (the exact score, rounded once)
    for line in (collective_run / "selection.txt").read_text().splitlines():
        numbers = printed_numbers(line)
        if re.match(r"\s*\d+\s+\d", line) and len(numbers) == 4:
            printed[int(numbers[0])] = numbers[3]
    assert sorted(printed) == layers
    for layer in layers:  # the same arithmetic: the recomputed score within a unit of the printed one's last digit
        assert printed_agrees(printed[layer], score[layer], slack=1e-5), (layer, printed[layer], score[layer])


def test_the_margin_is_the_second_best_windows_score_minus_the_best():
    windows = {1: 0.30, 2: 0.50, 3: 0.42}
    assert criterion.margin(windows) == pytest.approx(0.12)
    assert "the criterion decides it" in criterion.margin_sentence(windows)
    assert "BELOW the tolerance" in criterion.margin_sentence({1: 0.300, 2: 0.305})


def test_an_exact_tie_goes_to_the_deeper_window():
    assert criterion.ranked({1: 0.5, 2: 0.5, 3: 0.7}) == [2, 1, 3]
    record = [[t, 0, layer, 0.3] for t in range(2) for layer in range(6)]  # every window ties
    chosen, _, _ = criterion.select_layers(record, 3)
    assert chosen == [3, 4, 5]


@pytest.mark.parametrize("after_task, expected", [(1, 1), (0, 0), (20, 2)])
def test_the_learngene_is_cut_from_the_checkpoint_after_the_extraction_task(collective_run, tiny_split, tmp_path,
                                                                            after_task, expected):
    out = tmp_path / "run"
    shutil.copytree(collective_run / "checkpoints", out / "checkpoints")
    state = torch.load(collective_run / "last.pt", weights_only=True)
    art = learngene.extract(out, Split(tiny_split), learngene.Selection(after_task=after_task), state["config"],
                            state["record"], state["variant_record"], 3, torch.device("cpu"))
    assert art["source_task"] == expected  # capped at the last task trained
    for t in range(3):
        ck = torch.load(out / "checkpoints" / f"task_{t:03d}.pt", weights_only=True)["model"]
        same = all(torch.equal(art["state"][f"{j}.conv.weight"], ck[f"features.{i}.conv.weight"])
                   for j, i in enumerate(art["layers"]))
        assert same == (t == expected), t


PAIRED = ("scratch", "learngene", "learngene-noewc", "other-layers", "learngene-permuted", "learngene-frozen")


def test_paired_methods_share_the_new_layers_and_the_batch_order(collective_run, tiny_split):
    """Every individual-architecture method of one (seed, shots, task) starts its new layers from the same
    weights and sees the same batches: the basis of every paired difference."""
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    inputs = methods.Inputs(art, "", methods.load_collective(None, art, split))
    train, _ = fewshot.FewShotData(split, "target", cpu)(4, 1)
    settings = fewshot.TrainSettings(precision="fp32")

    def new_layers(method, task=1):
        model, _, _ = fewshot.prepare(RunKey(method, 4, task, 0), inputs, train, settings, cpu)
        return {k: v for k, v in model.state_dict().items() if not k.startswith("inherited.")}

    def batches(method, epoch):
        return [b.tolist() for b in batch_indices(len(train), 4, fewshot.batch_generator(RunKey(method, 4, 1, 0), epoch, cpu))]

    reference = new_layers("scratch")
    for method in PAIRED[1:]:
        assert all(torch.equal(reference[k], v) for k, v in new_layers(method).items()), method
        assert batches(method, 3) == batches("scratch", 3), method
    assert not torch.equal(new_layers("scratch", task=0)["front.0.conv.weight"], reference["front.0.conv.weight"])
    assert batches("scratch", 2) != batches("scratch", 3)


def digest(image):
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_every_task_image_carries_the_label_of_its_raw_class(tiny_split):
    """Each image a task returns, matched by content to the split's stored rows, is listed under the class its
    label names, and the raw dataset files that image under that class: test labels too."""
    split = Split(tiny_split)
    m = split.manifest
    raw = open_raw("tiny-imagenet-100", TINY, verify=False)

    def raw_class(image_id):
        part, index = image_id.split(":")
        return raw.classes[raw.labels[part][int(index)]]

    def check(classes, per_class, x, y):
        ids_by_digest = {}
        for c in classes:
            for i in per_class[c]:
                ids_by_digest.setdefault(digest(split.images[split._row[i]]), set()).add((c, i))
        assert len(y) == sum(len(per_class[c]) for c in classes)
        for image, label in zip(x, y):
            named = classes[label]
            assert any(c == named and raw_class(i) == named for c, i in ids_by_digest[digest(image)])

    for section in ("target", "validation"):
        for shots, tasks in m[section].items():
            for t, task in enumerate(tasks):
                xtr, ytr, xte, yte = split.few_shot(section, int(shots), t)
                check(task["classes"], task["train"], xtr, ytr)
                check(task["classes"], task["test"], xte, yte)
    for t, task in enumerate(m["continual"]):
        check(task["classes"], task["samples"], *split.continual(t))
        check(task["classes"], m["heldout"], *split.heldout(t))


def test_ewc_holds_the_inherited_blocks_only_and_pulls_them_back(collective_run, tiny_split):
    """The penalty's gradient is zero on every new layer and, on the inherited blocks, lambda x F x (w - anchor)."""
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    train, _ = fewshot.FewShotData(split, "target", cpu)(4, 0)
    settings = fewshot.TrainSettings(precision="fp32", ewc_lambda=7.0)
    model, _, ewc = fewshot.prepare(RunKey("learngene", 4, 0, 0), methods.Inputs(art, ""), train, settings, cpu)
    assert ewc is not None and set(ewc.fisher) == {n for n, _ in model.named_parameters() if n.startswith("inherited.")}
    assert fewshot.prepare(RunKey("learngene-noewc", 4, 0, 0), methods.Inputs(art, ""), train, settings, cpu)[2] is None
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.zero_grad()
    ewc(model).backward()
    for name, p in model.named_parameters():
        if name.startswith("inherited."):
            expected = 7.0 * ewc.fisher[name] * (p.detach() - ewc.anchor[name])
            assert torch.allclose(p.grad.double(), expected.double(), rtol=1e-5, atol=1e-12), name
            assert (p.grad * (p.detach() - ewc.anchor[name])).sum() > 0  # a step against it moves back
        else:
            assert p.grad is None or not p.grad.any(), name


def test_each_split_section_draws_its_own_random_stream(tmp_path):
    """More continual tasks do not move the target or validation tasks (nor the held-out images)."""
    if not (TINY / "train.npz").exists():
        pytest.skip("../shared/data/tiny-imagenet-100 absent")
    manifests = []
    for tasks in ("2", "4"):
        out = tmp_path / tasks
        proc = run_script("utils/data_imagenet_mk.py", "--dataset", "tiny-imagenet-100", "--path", TINY, "--out", out,
                          "--size", "32", "--num_tasks", tasks, "--num_imgs_per_cat_train", "6", "--num_target_tasks",
                          "2", "--shots", "2", "--heldout_per_class", "2", "--no-verify")
        assert proc.returncode == 0, proc.stderr
        manifests.append(json.loads((out / "manifest.json").read_text()))
    a, b = manifests
    assert a["target"] == b["target"] and a["validation"] == b["validation"] and a["heldout"] == b["heldout"]
    assert a["continual"] == b["continual"][:2]  # the stream itself: the first tasks stay
    assert len(b["continual"]) == 4


class Oracle(torch.nn.Module):
    """Logits that put the given answer first for each image (images are indices into `answers`)."""

    def __init__(self, answers, outputs=5):
        super().__init__()
        self.answers, self.outputs = answers, outputs

    def forward(self, x):
        ids = x[:, 0, 0, 0].round().long()
        return torch.nn.functional.one_hot(self.answers[ids], self.outputs).float()


def test_test_accuracy_is_the_share_of_predictions_equal_to_the_labels(monkeypatch):
    from utils import engine, source
    monkeypatch.setattr(engine, "normalize", lambda x, channels_last=False: x.float())
    monkeypatch.setattr(source, "normalize", lambda x, channels_last=False: x.float())
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 3, 2, 2).contiguous()
    data = engine.DeviceData(images, labels)
    answers = torch.tensor([0, 1, 2, 3, 4, 1, 2, 3])  # the first five right, the last three wrong
    assert engine.evaluate(Oracle(answers), data, batch_size=3) == 5 / 8
    # by class, the same pass: label 0 right 1 of 2, labels 1 and 2 right 1 of 2, labels 3 and 4 right 1 of 1
    assert engine.evaluate(Oracle(answers), data, batch_size=3, by_class=True) == (5 / 8, [0.5, 0.5, 0.5, 1.0, 1.0])
    # the held-out reading: among the given outputs, label y meaning outputs[y]
    shifted = torch.tensor([5, 6, 7, 8, 9])
    local, overall = source.choice_accuracy(Oracle(answers + 5, 10), data, shifted, "fp32", batch_size=3)
    assert local == overall == 5 / 8


def test_the_default_criterion_is_the_signed_gradient_above_5e_4():
    """Without options the criterion counts entries with g > 5e-4 (signed, as the released scripts published)."""
    from utils.models import CollectiveNet
    model = CollectiveNet(image_size=32)
    values = torch.tensor([1e-3, 6e-4, -1e-3, 4e-4, 1e-9, -1e-9, 0.0, 0.0])  # 2 of 8 above 5e-4, signed
    for w in model.conv_weights():
        w.grad = values.repeat(w.numel() // 8 + 1)[:w.numel()].view_as(w)
    c = criterion.GradientCriterion()
    c.start_epoch()
    c(model)
    first = c.end_epoch()[0]
    for w, v in zip(model.conv_weights(), first):
        assert v == pytest.approx((w.grad > 5e-4).double().mean().item()) and v == pytest.approx(0.25, abs=0.01)
    assert collective_defaults()["threshold"] == 5e-4 and collective_defaults()["judgement_abs"] is False


def collective_defaults():
    from utils.collective import CollectiveSettings
    from types import SimpleNamespace
    split = SimpleNamespace(dataset="tiny-imagenet-100", hash="h", image_size=32)
    return CollectiveSettings().config(split)


def test_each_probe_reads_the_network_its_name_says(collective_run, joint_run, tiny_split, monkeypatch):
    """probe-collective: the trained collective checkpoint; probe-random: a network of its shape, untrained;
    probe-joint: the joint source."""
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    collective = methods.load_collective(None, art, split)
    joint = methods.load_collective(joint_run / "joint.pt", art, split)
    train, test = fewshot.FewShotData(split, "target", cpu)(2, 0)
    seen = []
    real = fewshot.conv_features
    monkeypatch.setattr(fewshot, "conv_features", lambda model, images: seen.append(model.state_dict()) or real(model, images))
    expected = {"probe-collective": collective["model"], "probe-joint": joint["model"]}
    for method in ("probe-collective", "probe-random", "probe-joint"):
        seen.clear()
        fewshot.train_probe(RunKey(method, 2, 0, 0), methods.Inputs(art, "", collective, joint), train, test,
                            fewshot.TrainSettings(precision="fp32"), cpu)
        assert seen, method
        for state in seen:
            for name in ("features.0.conv.weight", "features.12.conv.weight", "features.12.bn.running_var"):
                if method in expected:
                    assert torch.equal(state[name], expected[method][name]), (method, name)
                else:
                    assert not torch.equal(state[name], collective["model"][name]), (method, name)
                    assert not torch.equal(state[name], joint["model"][name]), (method, name)
