"""Individual models: construction from a learngene, task independence, the script and its bad inputs."""
import csv
import json

import pytest
import torch
from conftest import assert_clean_error, run_script

from utils import individual, learngene
from utils.engine import DeviceData
from utils.splits import Split


def args(**kw):
    base = dict(epochs=2, batch_size=4, lr=0.005, momentum=0.9, weight_decay=5e-4, ewc_lambda=40.0, eval_every=1)
    base.update(kw)
    return type("Args", (), base)


def test_model_construction(collective_run):
    art = learngene.load(collective_run / "learngene.pt")
    split = Split(json.loads((collective_run / "config.json").read_text())["args"]["path"])
    collective = individual.load_collective(None, art, split)
    for method in individual.METHODS:
        torch.manual_seed(0)
        model, layers = individual.build_model(method, art, collective, 32)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
        if method.startswith("learngene"):
            assert layers == art["layers"]
            for j in range(3):
                assert torch.equal(model.inherited[j].conv.weight, art["state"][f"{j}.conv.weight"])
        if method == "other-layers":
            assert layers != art["layers"] and len(layers) == 3
            assert torch.equal(model.inherited[0].conv.weight, collective["model"][f"features.{layers[0]}.conv.weight"])
        if method == "scratch":
            assert not torch.equal(model.inherited[0].conv.weight, art["state"]["0.conv.weight"])


def test_tasks_are_independent_of_order(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")

    def data(t):
        xtr, ytr, xte, yte = split.few_shot("target", 2, t)
        return DeviceData.from_numpy(xtr, ytr, cpu), DeviceData.from_numpy(xte, yte, cpu)

    def one(t):
        return individual.train_one("learngene", art, None, *data(t), args(), seed=0, shots=2, task=t, device=cpu)

    forward = [one(0)["curve"], one(1)["curve"]]
    backward = [one(1)["curve"], one(0)["curve"]][::-1]
    assert forward == backward


def test_script_end_to_end_and_resume(collective_run, tiny_split, tmp_path):
    script = "individual-model/inheritable_imagenet_wEWC.py"
    common = ["--path", tiny_split, "--learngene", collective_run / "learngene.pt", "--epochs", "2", "--batch_size",
              "4", "--num_works_tt", "1", "--out", tmp_path / "res", "--no-cuda"]
    proc = run_script(script, *common)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "res" / "results.csv")))
    assert {(r["shots"], r["method"]) for r in rows} == {(s, m) for s in ("2", "4") for m in individual.METHODS}
    assert all(0 <= float(r["final_acc"]) <= 100 and r["runs"] == "1" for r in rows)
    assert (tmp_path / "res" / "curves.png").exists() and "| shots | method |" in (tmp_path / "res" / "results.md").read_text()
    again = run_script(script, *common)
    assert again.returncode == 0 and "10 runs already" in again.stdout and "0 to go" in again.stdout
    assert_clean_error(run_script(script, *common, "--lr", "0.1"), "other settings")
    # the same runs through the batched path give the same table, up to a couple of test images
    batched = [str(a) if a != tmp_path / "res" else str(tmp_path / "batched") for a in common]
    proc = run_script(script, *batched, "--batched")
    assert proc.returncode == 0, proc.stderr
    rows_b = list(csv.DictReader(open(tmp_path / "batched" / "results.csv")))
    assert [(r["shots"], r["method"]) for r in rows_b] == [(r["shots"], r["method"]) for r in rows]
    for a, b in zip(rows, rows_b):
        assert abs(float(a["final_acc"]) - float(b["final_acc"])) <= 100 * 2 / 250 + 1e-6, (a, b)


def test_bad_inputs(collective_run, tiny_split, tmp_path):
    script = "individual-model/inheritable_imagenet_wEWC.py"
    base = ["--path", tiny_split, "--out", tmp_path / "o", "--epochs", "1"]
    assert_clean_error(run_script(script, *base, "--learngene", tmp_path / "none.pt"), "not found")
    broken = tmp_path / "broken.pt"
    broken.write_bytes((collective_run / "learngene.pt").read_bytes()[:300])
    assert_clean_error(run_script(script, *base, "--learngene", broken), "corrupted")
    art = torch.load(collective_run / "learngene.pt", weights_only=True)
    art["dataset"] = "cifar100"
    torch.save(art, tmp_path / "cifar.pt")
    assert_clean_error(run_script(script, *base, "--learngene", tmp_path / "cifar.pt"), "learngene from cifar100")
    art = torch.load(collective_run / "learngene.pt", weights_only=True)
    art["state"]["0.conv.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(art, tmp_path / "arch.pt")
    assert_clean_error(run_script(script, *base, "--learngene", tmp_path / "arch.pt"), "header says")
    assert_clean_error(run_script(script, *base, "--learngene", collective_run / "learngene.pt",
                                  "--num_imgs_per_cat_train", "10"), "no 10-shot target tasks")
    assert_clean_error(run_script("individual-model/inheritable_cifar100_wEWC.py", *base, "--learngene",
                                  collective_run / "learngene.pt"), "is a tiny-imagenet-100 split")
    assert not (tmp_path / "o").exists()


def test_batched_training_matches_one_by_one(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split, cpu = Split(tiny_split), torch.device("cpu")
    split_path = json.loads((collective_run / "config.json").read_text())["args"]["path"]
    collective = individual.load_collective(None, art, Split(split_path))
    data = individual.FewShotData(split, "target", cpu)
    group = [(4, t, 0, m) for t in (0, 1) for m in ("learngene", "learngene-noewc", "scratch", "other-layers")]
    a = args(epochs=3, ewc_lambda=4000.0)
    grouped = individual.train_grouped(group, art, collective, data, a, cpu)
    for (k, t, s, m), g in zip(group, grouped):
        one = individual.train_one(m, art, collective, *data(k, t), a, seed=s, shots=k, task=t, device=cpu)
        assert g["inherited_layers"] == one["inherited_layers"] and g["parameters"] == one["parameters"]
        for cg, co in zip(g["curve"], one["curve"]):
            assert cg[1] == pytest.approx(co[1], rel=1e-3), (m, t)          # training loss per epoch
            assert abs(cg[3] - co[3]) <= 2 / 250 + 1e-9, (m, t)            # test accuracy: at most 2 images flip
    assert individual.plan_groups([(10, 0, 0, "scratch"), (10, 0, 0, "finetune-collective"), (20, 0, 0, "scratch")],
                                  True, 64) == [[(10, 0, 0, "scratch")], [(10, 0, 0, "finetune-collective")],
                                                [(20, 0, 0, "scratch")]]
