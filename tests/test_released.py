"""The released script's protocol behind its switches (utils/fewshot.Protocol, --protocol released) and the
decomposition table (utils/released.py): each switch does what the release did and nothing else, the clean
protocol is untouched, and the table's paired arithmetic is checked by hand."""
import json

import pytest
import torch
from conftest import assert_clean_error, run_script
from test_individual import float64, settings

from utils import fewshot, learngene, released, runstore
from utils.fewshot import Protocol
from utils.methods import Inputs
from utils.splits import Split

Key = runstore.RunKey


def setup(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    cpu = torch.device("cpu")
    return Inputs(art, ""), fewshot.FewShotData(Split(tiny_split), "target", cpu), cpu


def test_a_chained_task_starts_from_the_model_the_previous_one_ended_with(collective_run, tiny_split, monkeypatch):
    """The released `model_vgg = model_v`: every weight (head included) at the start of task 2 equals the end of
    task 1, and the chain's first task is exactly a fresh run."""
    inputs, data, cpu = setup(collective_run, tiny_split)
    snapshots, fit = [], fewshot.fit

    def recording_fit(model, *args):
        start = {k: v.clone() for k, v in model.state_dict().items()}
        out = fit(model, *args)
        snapshots.append((start, {k: v.clone() for k, v in model.state_dict().items()}))
        return out
    monkeypatch.setattr(fewshot, "fit", recording_fit)
    chain = [Key("learngene", 2, 1, 0), Key("learngene", 2, 0, 0)]
    results = fewshot.train_chain(chain, inputs, data, settings(), cpu, Protocol(chain=2))
    (start1, end1), (start2, _) = snapshots[:2]
    assert all(torch.equal(end1[k], start2[k]) for k in end1)
    assert not all(torch.equal(start1[k], end1[k]) for k in start1)  # the first task did train it
    assert [r["chain_position"] for r in results] == [0, 1] and results[0]["chain"] == [1, 0]
    fresh = fewshot.train_one(chain[0], inputs, *data(2, 1), settings(), cpu)
    assert results[0]["curve"] == fresh["curve"]
    fresh_second = fewshot.train_one(chain[1], inputs, *data(2, 0), settings(), cpu)
    assert results[1]["curve"] != fresh_second["curve"]  # the second task did not start fresh


def test_the_optimizer_restarts_every_epoch_only_when_asked(collective_run, tiny_split, monkeypatch):
    inputs, data, cpu = setup(collective_run, tiny_split)
    made, sgd = [], fewshot.sgd
    monkeypatch.setattr(fewshot, "sgd", lambda *a: made.append(1) or sgd(*a))
    key = Key("scratch", 2, 0, 0)
    with float64():
        two = settings(epochs=2)
        clean = fewshot.train_one(key, inputs, *data(2, 0), two, cpu)
        assert len(made) == 1
        restarted = fewshot.train_one(key, inputs, *data(2, 0), two, cpu,
                                      Protocol(optimizer_per_epoch=True))
        assert len(made) == 1 + 2
    assert restarted["curve"][0][1] == clean["curve"][0][1]  # epoch 1: the same fresh optimizer
    assert restarted["curve"][1][1] != clean["curve"][1][1]  # epoch 2: momentum lost


def test_the_clean_protocol_adds_nothing_to_a_runs_identity():
    assert Protocol().identity() == {}  # runs recorded before the switches existed keep their identity
    assert Protocol(chain=5).identity() == {"protocol": {"chain": 5, "order": (), "optimizer_per_epoch": False}}
    assert Protocol(chain=2, order=(3, 1, 0, 2)).chains(4) == [[3, 1], [0, 2]]
    assert Protocol(chain=5).chains(7) == [[0, 1, 2, 3, 4], [5, 6]]


def released_args(methods, **given):
    from argparse import Namespace
    return Namespace(**{"protocol": "released", "chain": None, "epochs": None, "batch_size": None,
                        "optimizer_per_epoch": False, "methods": methods, "ewc_lambda": 40000.0, "chain_order": None,
                        **given})


def test_protocol_released_sets_the_released_choices():
    """For inheriting methods: chains of 5 tasks (or one chain of all when fewer), a new optimizer every epoch and
    no EWC (the released penalty was always zero); for scratch alone, the released baseline: fresh per task, 100
    epochs at batch 64, its EWC strength untouched (it has none)."""
    from utils.individual import resolve_protocol
    args = released_args(["learngene"])
    assert resolve_protocol(args, 7) == Protocol(chain=5, optimizer_per_epoch=True) and args.ewc_lambda == 0.0
    assert resolve_protocol(released_args(["learngene"]), 3) == Protocol(chain=3, optimizer_per_epoch=True)
    args = released_args(["scratch"])
    assert resolve_protocol(args, 7) == Protocol() and (args.epochs, args.batch_size) == (100, 64)
    clean = released_args(["learngene", "scratch"], protocol="clean")
    assert resolve_protocol(clean, 7) == Protocol() and clean.ewc_lambda == 40000.0 and clean.epochs is None


def test_chained_runs_are_trained_as_chains_in_the_protocols_order(tiny_split, tmp_path, monkeypatch):
    """What --chain asks of the individual script: each chain's runs handed to train_chain together, in the
    protocol's order, and no run of a chained study trained alone."""
    from types import SimpleNamespace

    from utils import individual
    chains = []

    def fake_chain(chain, *args):
        chains.append([k.task for k in chain])
        return [{"method": k.method, "shots": k.shots, "task": k.task, "seed": k.seed, "final_acc": 1.0} for k in chain]
    monkeypatch.setattr(individual, "train_chain", fake_chain)
    monkeypatch.setattr(individual, "train_run", lambda *a: pytest.fail("a run of a chained study trained alone"))
    study = SimpleNamespace(split=Split(tiny_split), section="target", device=torch.device("cpu"), inputs=None,
                            protocol=Protocol(chain=2, order=(1, 0)), num_tasks=2, settings=settings(),
                            settings_of=lambda method: settings())
    store = runstore.RunStore(tmp_path / "runs.jsonl", {})
    requested = [Key(m, 2, t, 0) for m in ("learngene", "scratch") for t in (0, 1)]
    individual.train_missing(store, study, requested, False)
    assert chains == [[1, 0], [1, 0]] and set(store.runs) == set(requested)


def script(collective_run, tiny_split, out, *args):
    return run_script("individual-model/inheritable_imagenet_wEWC.py", "--path", tiny_split, "--learngene",
                      collective_run / "learngene.pt", "--out", out, "--no-cuda", *args)


@pytest.mark.slow
def test_protocol_flags_refuse_what_contradicts_them(collective_run, tiny_split, tmp_path):
    out = tmp_path / "out"
    for args, fragment in (
            (["--protocol", "released", "--methods", "learngene", "scratch"], "run --methods scratch alone"),
            (["--protocol", "released", "--epochs", "3"], "sets --epochs itself"),
            (["--chain_order", "1", "0"], "--chain_order needs --chain"),
            (["--chain", "2", "--chain_order", "0", "0"], "each of the tasks used"),
            (["--chain", "3"], "longer than the 2 tasks"),
            (["--chain", "2", "--methods", "probe-collective"], "has no model to carry")):
        assert_clean_error(script(collective_run, tiny_split, out, *args), fragment)
    assert not out.exists()


@pytest.mark.slow
def test_released_protocol_end_to_end(collective_run, tiny_split, tmp_path):
    """--protocol released: the learngene chained over the tasks with a new optimizer every epoch and no EWC; the
    scratch baseline alone gets the released baseline's 100 epochs at batch 64, fresh per task."""
    proc = script(collective_run, tiny_split, tmp_path / "lg", "--protocol", "released", "--methods", "learngene",
                  "--num_imgs_per_cat_train", "2")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in (tmp_path / "lg" / "runs.jsonl").open()]
    assert {json.dumps(r["settings"]["protocol"], sort_keys=True) for r in lines} == {
        json.dumps({"chain": 2, "order": [], "optimizer_per_epoch": True}, sort_keys=True)}
    assert {r["settings"]["ewc_lambda"] for r in lines} == {0.0}
    assert sorted((r["result"]["task"], r["result"]["chain_position"]) for r in lines) == [(0, 0), (1, 1)]
    assert all(c[4] == 0 for r in lines for c in r["result"]["curve"])  # no EWC penalty
    assert "Protocol: the released script's choices" in (tmp_path / "lg" / "results.md").read_text()
    again = script(collective_run, tiny_split, tmp_path / "lg", "--protocol", "released", "--methods", "learngene",
                   "--num_imgs_per_cat_train", "2")  # a chained folder resumes: its runs are found, not refused
    assert again.returncode == 0 and "2 runs already" in again.stdout and "0 to go" in again.stdout, again.stderr
    proc = script(collective_run, tiny_split, tmp_path / "scratch", "--protocol", "released", "--methods", "scratch",
                  "--num_imgs_per_cat_train", "2", "--eval_every", "50")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in (tmp_path / "scratch" / "runs.jsonl").open()]
    assert {(r["settings"]["epochs"], r["settings"]["batch_size"]) for r in lines} == {(100, 64)}
    assert all("protocol" not in r["settings"] and "chain" not in r["result"] for r in lines)


def fake_runs(values, method="learngene", chained=False):
    """{RunKey: result} from {(shots, task): accuracy}; chained runs get their position (task order)."""
    return {Key(method, k, t, 0): {"final_acc": v, "best_acc": v + 1, **({"chain_position": t % 2} if chained else {})}
            for (k, t), v in values.items()}


def test_decomposition_pairs_each_row_with_its_scratch():
    tasks = range(4)
    clean = {**fake_runs({(10, t): 50.0 + t for t in tasks}),
             **fake_runs({(10, t): 48.0 + t for t in tasks}, "scratch")}
    gains = {"chained": 5.0, "optimizer-per-epoch": -1.0, "no-ewc": 0.5, "released": 6.0}
    folders = {"clean": clean, **{name: fake_runs({(10, t): 48.0 + t + g + (t % 2) for t in tasks}, chained=True)
                                  for name, g in gains.items()}}
    folders["chained"].update(fake_runs({(10, t): 48.0 + t + 4.0 for t in tasks}, "scratch", chained=True))
    folders["released-scratch"] = fake_runs({(10, t): 47.0 + t for t in tasks}, "scratch")
    folders["released-chained-scratch"] = fake_runs({(10, t): 47.0 + t + 3.0 for t in tasks}, "scratch", chained=True)
    rows = {(r[0], r[2]): r for r in released.table(folders, chain=2)}
    clean_row = rows[("clean protocol", "final_acc")]
    assert clean_row[6] == pytest.approx(2.0) and clean_row[7] == pytest.approx(0.0) and clean_row[11] == "chain"
    chained = rows[("+ target tasks chained", "final_acc")]
    # per task: gain + t % 2 against scratch 48 + t; per chain of 2 tasks: gain + 0.5; 2 chains, equal: no spread
    assert chained[6] == pytest.approx(5.5) and chained[10] == 2 and chained[8] == pytest.approx(4.0)
    assert rows[("+ the released scratch baseline's settings", "final_acc")][6] == pytest.approx(3.0)
    full = rows[("released protocol (all of the above)", "final_acc")]
    assert full[6] == pytest.approx(6.0 + 0.5 + 1.0) and full[8] == pytest.approx(3.0)
    assert rows[("clean protocol", "best_acc")][3] == pytest.approx(clean_row[3] + 1)


def test_one_chain_falls_back_to_its_tasks_and_says_so():
    values = {0: 1.0, 1: 3.0, 2: 5.0}
    assert released.units(values, [0, 1, 2], chain=5) == ([1.0, 3.0, 5.0], "task")
    assert released.units(values, [0, 1], chain=1) == ([1.0, 3.0], "chain")
    tasks = range(2)
    runs = {**fake_runs({(10, t): 50.0 for t in tasks}), **fake_runs({(10, t): 49.0 for t in tasks}, "scratch")}
    chained = {**fake_runs({(10, t): 52.0 for t in tasks}, chained=True),
               **fake_runs({(10, t): 51.0 for t in tasks}, "scratch", chained=True)}
    folders = {"clean": runs, "chained": chained, "optimizer-per-epoch": runs, "no-ewc": runs,
               "released-scratch": runs, "released": chained, "released-chained-scratch": chained}
    rows = released.table(folders, chain=5)
    assert {r[11] for r in rows} == {"task"}
    md = released.markdown(rows, 5, 100, {"commit": "c", "device": "cpu", "time_utc": "now", "command": "python x.py"})
    assert "understate the uncertainty" in md
    assert "| + target tasks chained | 10 | 52.0 | 49.0 | 51.0 | +3.0 | n/a | ±0.0 | +2.0 | n/a | ±0.0 |" in md


def test_a_chained_row_has_an_interval_over_chains_and_one_over_tasks_by_hand():
    """Per-task differences 1, 3, 2, 6 in 2 chains of 2: over chains the samples are 2 and 4 (t with 1 degree of
    freedom, 12.706 x sd 1.414 / sqrt 2); over tasks, the four (3.182 x sd 2.160 / 2)."""
    tasks = range(4)
    diff = {0: 1.0, 1: 3.0, 2: 2.0, 3: 6.0}
    scratch = fake_runs({(10, t): 40.0 for t in tasks}, "scratch")
    chained = fake_runs({(10, t): 40.0 + diff[t] for t in tasks}, chained=True)
    folders = {"clean": {**scratch, **fake_runs({(10, t): 40.0 for t in tasks})}, "chained": {**chained, **scratch},
               "optimizer-per-epoch": chained, "no-ewc": chained, "released-scratch": scratch, "released": chained,
               "released-chained-scratch": scratch}
    row = next(r for r in released.table(folders, chain=2) if r[0] == "+ target tasks chained" and r[2] == "final_acc")
    assert row[6] == pytest.approx(3.0) and row[10:12] == [2, "chain"] and row[14] == 4
    assert row[7] == pytest.approx(12.706)
    assert row[12] == pytest.approx(3.182 * (14 / 3) ** 0.5 / 2)


def test_the_classes_a_chain_had_already_trained_on_are_counted_by_hand():
    classes = {0: list("abcde"), 1: list("abfgh"), 2: list("afijk")}

    def chain(order):
        return {Key("learngene", 10, t, 0): {"final_acc": 50.0, "classes": classes[t], "chain": order,
                                            "chain_position": order.index(t)} for t in order}
    seen = released.seen_before(chain([0, 1, 2]))
    assert {k.task: n for k, n in seen.items()} == {0: 0, 1: 2, 2: 2}  # task 2: a and f, from tasks 0 and 1
    seen = released.seen_before(chain([2, 0, 1]))
    assert {k.task: n for k, n in seen.items()} == {2: 0, 0: 1, 1: 3}  # task 1: a, b and f
    runs = chain([0, 1, 2])
    scratch_chained = {k._replace(method="scratch"): {**r, "final_acc": 40.0 + 2 * k.task} for k, r in runs.items()}
    fresh = {k._replace(method="scratch"): {"final_acc": 40.0} for k in runs}
    runs[Key("learngene", 10, 2, 0)]["final_acc"] = 56.0
    folders = {"chained": {**runs, **scratch_chained}, "clean": fresh}
    rows = {r[2]: r for r in released.overlap_rows(folders)}
    assert sorted(rows) == [0, 2] and rows[2][3] == 2  # tasks 1 and 2 had seen 2 classes each
    assert rows[2][4] == pytest.approx(53.0) and rows[2][7] == pytest.approx(13.0)  # (50 + 56) / 2 - 40
    assert rows[2][9] == pytest.approx(3.0) and rows[0][9] == pytest.approx(0.0)  # chained scratch: (2 + 4) / 2


def test_each_classs_accuracy_is_read_by_whether_its_chain_had_trained_on_it():
    """Two chains of two tasks, by hand: the classes an earlier task of the chain held are 'seen', the others 'new';
    each cell is the chained run's accuracy on that class minus fresh scratch's on the same task and class, a chain's
    cells averaged first, the interval over chains."""
    classes = {0: ["a", "b"], 1: ["b", "c"], 2: ["d", "e"], 3: ["e", "a"]}
    chains = {0: [0, 1], 1: [0, 1], 2: [2, 3], 3: [2, 3]}

    def runs(method, accs):
        return {Key(method, 10, t, 0): {"final_acc": sum(accs[t]) / 2, "class_acc": accs[t], "classes": classes[t],
                                        "chain": chains[t], "chain_position": chains[t].index(t)} for t in classes}
    learngene = runs("learngene", {0: [50, 50], 1: [70, 40], 2: [50, 50], 3: [60, 40]})
    chained_scratch = runs("scratch", {t: [40, 40] for t in classes})
    fresh = {Key("scratch", 10, t, 0): {"final_acc": 40.0, "class_acc": [40.0, 40.0]} for t in classes}
    folders = {"chained": {**learngene, **chained_scratch}, "clean": fresh}
    rows = {r[2]: r for r in released.class_rows(folders)}
    seen, new = rows["seen earlier in its chain"], rows["new to its chain"]
    assert seen[3:5] == [2, 2] and seen[5] == pytest.approx(25.0)  # task 1's b: +30, task 3's e: +20
    assert seen[6] == pytest.approx(12.706 * 5 * 2 ** 0.5 / 2 ** 0.5)  # chains 30 and 20: sd 7.07, over 2
    assert new[3:5] == [6, 2] and new[5] == pytest.approx((10 + 10 + 0 + 10 + 10 + 0) / 6)
    assert seen[7] == pytest.approx(0.0) and new[7] == pytest.approx(0.0)  # chained scratch: no gain anywhere
    del learngene[Key("learngene", 10, 3, 0)]["class_acc"]
    assert released.class_rows(folders) == []  # a run recorded before class_acc: nothing to read
