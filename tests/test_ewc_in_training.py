"""EWC acts in training, not only in the EWC object: for every path that trains inherited blocks (one run by one,
a released chain, many runs grouped, a user's own task, the collective model across its tasks), one SGD step with
EWC moves each inherited weight by exactly what the loss gradient plus lambda x F x (w - anchor) gives, and every
other weight exactly as the same step without EWC does. In float64, one step: the first step of SGD with momentum is
w - lr (g + wd w), so the two steps differ by lr x lambda x F x (w - anchor) and by nothing else.

Every run starts its inherited blocks at the anchor, where the penalty's gradient is zero; to see it act in one
step, the harness moves each anchor off the starting weights (a seeded offset) before training starts."""
import copy

import pytest
import torch
from test_individual import float64

from utils import collective, fewshot, grouped, learngene, methods, your_task
from utils.engine import DeviceData, sgd
from utils.ewc import EWC
from utils.runstore import RunKey
from utils.splits import Split

LAM, LR, OFFSET = 50.0, 0.01, 0.05


def one_step(**kw):
    """One epoch of one batch (the few-shot tasks here have 20 images) at the EWC strength `ewc_lambda`."""
    return fewshot.TrainSettings(**{"epochs": 1, "batch_size": 64, "lr": LR, "eval_every": 1, "precision": "fp32", **kw})


def capture_prepare(monkeypatch):
    """Every model fewshot.prepare builds, with its starting weights and EWC term (anchors moved off the start)."""
    built, real = [], fewshot.prepare

    def prepare(*args, **kw):
        model, layers, ewc = real(*args, **kw)
        if ewc is not None:
            g = torch.Generator().manual_seed(len(built))  # its own stream: the runs' seeded draws are untouched
            for name, anchor in ewc.anchor.items():
                ewc.anchor[name] = anchor + OFFSET * torch.randn(anchor.shape, generator=g, dtype=anchor.dtype)
        built.append({"model": model, "ewc": ewc, "start": {n: p.detach().clone() for n, p in model.named_parameters()}})
        return model, layers, ewc
    monkeypatch.setattr(fewshot, "prepare", prepare)
    monkeypatch.setattr(your_task, "prepare", prepare)
    return built


def check_one_step(start, with_ewc, without, ewc, lam=LAM):
    """with_ewc - without == -lr x lam x F x (start - anchor) on the EWC's parameters, 0 on every other."""
    assert set(with_ewc) == set(without) == set(start)
    held = 0
    for name, w0 in start.items():
        moved = with_ewc[name] - without[name]
        if name in ewc.fisher:
            expected = -LR * lam * ewc.fisher[name] * (w0 - ewc.anchor[name])
            assert torch.allclose(moved, expected, rtol=1e-7, atol=1e-13), name
            held += int(expected.abs().max() > 1e-9)
        else:
            assert torch.allclose(moved, torch.zeros_like(moved), atol=1e-13), name
    assert held >= len(ewc.fisher) // 2  # the penalty pulled measurably on most of the held parameters


@pytest.fixture
def task(collective_run, tiny_split):
    art = learngene.load(collective_run / "learngene.pt")
    split = Split(tiny_split)
    inputs = methods.Inputs(art, "", methods.load_collective(None, art, split))
    return inputs, fewshot.FewShotData(split, "target", torch.device("cpu"))


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_by_one_training_steps_along_the_ewc_gradient(task, monkeypatch):
    inputs, data = task
    key, cpu = RunKey("learngene", 4, 0, 0), torch.device("cpu")
    built = capture_prepare(monkeypatch)
    with float64():
        fewshot.train_one(key, inputs, *data(4, 0), one_step(ewc_lambda=LAM), cpu)
        fewshot.train_one(key, inputs, *data(4, 0), one_step(ewc_lambda=0.0), cpu)
    (a, b) = built
    assert a["ewc"] is not None and b["ewc"] is None
    assert all(torch.equal(a["start"][n], b["start"][n]) for n in a["start"])  # the same start
    check_one_step(a["start"], weights(a["model"]), weights(b["model"]), a["ewc"])


def test_a_chain_steps_along_the_ewc_gradient_of_its_first_task(task, monkeypatch):
    """The released protocol's chained training (its EWC term kept along the chain) follows the same step."""
    inputs, data = task
    cpu, protocol = torch.device("cpu"), fewshot.Protocol(chain=1)
    built = capture_prepare(monkeypatch)
    with float64():
        for lam in (LAM, 0.0):
            fewshot.train_chain([RunKey("learngene", 4, 1, 0)], inputs, data, one_step(ewc_lambda=lam), cpu, protocol)
    (a, b) = built
    check_one_step(a["start"], weights(a["model"]), weights(b["model"]), a["ewc"])


def test_grouped_training_steps_along_each_models_own_ewc_gradient(task, monkeypatch):
    """Two runs trained as one grouped network: the learngene's blocks follow its EWC term, and the run without EWC
    beside it takes exactly the step it takes alone."""
    inputs, data = task
    cpu, group = torch.device("cpu"), [RunKey("learngene", 4, 0, 0), RunKey("learngene-noewc", 4, 1, 0)]
    built, networks = capture_prepare(monkeypatch), []

    class Captured(grouped.GroupedIndividual):
        def __init__(self, models):
            super().__init__(models)
            networks.append(self)
    monkeypatch.setattr(grouped, "GroupedIndividual", Captured)
    with float64():
        for lam in (LAM, 0.0):
            fewshot.train_grouped(group, inputs, data, one_step(ewc_lambda=lam), cpu)

    def ungrouped(network, m, model):
        """Model m's own parameters out of the grouped network, by IndividualNet name."""
        params = dict(network.named_parameters())
        out = {}
        for name, (gname, how) in grouped.grouped_names(model).items():
            p = params[gname].detach()
            out[name] = p.chunk(len(group))[m] if how == "cat" else p[m]
        return out
    learngene_ewc, noewc_ewc = built[0], built[1]
    assert learngene_ewc["ewc"] is not None and noewc_ewc["ewc"] is None
    trained = [[ungrouped(net, m, built[m]["model"]) for m in range(len(group))] for net in networks]
    check_one_step(learngene_ewc["start"], trained[0][0], trained[1][0], learngene_ewc["ewc"])
    assert all(torch.allclose(trained[0][1][n], trained[1][1][n], rtol=0, atol=1e-13) for n in trained[0][1])


def test_your_task_training_steps_along_the_ewc_gradient(task, monkeypatch):
    inputs, data = task
    cpu = torch.device("cpu")
    train, test = data(4, 0)
    built = capture_prepare(monkeypatch)
    with float64():
        for lam in (LAM, 0.0):
            your_task.train("learngene", inputs, {"train": train, "test": test}, 5, one_step(ewc_lambda=lam),
                            cpu, 0)
    (a, b) = built
    check_one_step(a["start"], weights(a["model"]), weights(b["model"]), a["ewc"])


def test_the_collective_models_ewc_across_tasks_acts_in_its_training(collective_run, tiny_split, tmp_path):
    """--ewc_lambda of the collective script (off by default, as released): an epoch of a later task steps along
    lambda x F x (w - anchor) on the parameters its EWC term holds."""
    cpu = torch.device("cpu")
    data = DeviceData.from_numpy(*Split(tiny_split).continual(1), cpu)
    ck = torch.load(collective_run / "checkpoints" / "task_000.pt", weights_only=True)
    settings = collective.CollectiveSettings(epochs=1, batch_size=len(data), lr=LR, criterion=False)
    with float64():
        model = methods.collective_net(ck)
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(0)
        names = [n for n in params if n.startswith("features.")]
        anchor = {n: params[n].detach() + OFFSET * torch.randn(params[n].shape, generator=g) for n in names}
        fisher = {n: torch.rand(params[n].shape, generator=g) for n in names}
        after = []
        for lam in (LAM, 0.0):
            trained = copy.deepcopy(model)
            optimizer = sgd(trained, settings.lr, settings.momentum, settings.weight_decay)
            ewc = EWC(anchor, fisher, lam) if lam else None
            state = {"metrics": [], "record": [], "variant_record": []}
            collective._train_epoch(settings, tmp_path, trained, optimizer, ewc, None, data, state, 1, 0)
            after.append(weights(trained))
    check_one_step(weights(model), after[0], after[1], EWC(anchor, fisher, LAM))
