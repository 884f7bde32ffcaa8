"""Training one individual model on one few-shot task, as its method says: SGD on the whole model (with EWC on
the inherited blocks where the method has it), the same for many runs at once as one grouped network, or a
linear probe on frozen features. Every run starts from a fresh model and optimizer seeded by (seed, shots,
task) alone, so no task sees another's weights, the order of runs does not matter, and every method shares
the new layers' initialisation and the batch order: the basis of the paired comparisons.

The released individual script ran its target tasks otherwise, and `Protocol` reproduces that behind explicit
switches (the default is the clean protocol above): tasks chained, each starting from the model the previous
task ended with, and a new optimizer at every epoch."""
import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from utils import grouped
from utils.engine import DeviceData, class_accuracy, evaluate, normalize, seeded_generator, sgd, train_epoch, uses_channels_last
from utils.ewc import EWC, RELEASED_LAMBDA, fisher_diagonal
from utils.methods import METHODS, build_model, collective_net
from utils.models import count_parameters
from utils.repro import derived_seed


@dataclass(frozen=True)
class TrainSettings:
    """How an individual model trains (the defaults: the released script's, the paper's schedule)."""
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ewc_lambda: float = RELEASED_LAMBDA  # the released 40 x 1000; the pipeline picks it on validation tasks
    eval_every: int = 1  # test accuracy every N epochs, for the curves (the last epoch always)
    precision: str = "fp32"  # resolved: "fp32" or "bf16" autocast


RELEASED_CHAIN = 5  # the released command's --num_works_tt 5: five target tasks, one chain


@dataclass(frozen=True)
class Protocol:
    """How the target tasks follow one another. The defaults are the clean protocol; each switch is one choice of
    the released inheritable_*_wEWC.py."""
    chain: int = 0  # 0: every task starts from a fresh model; L: the tasks, in `order`, form consecutive chains of L,
                    # each task starting from the model (head included) the previous one ended with (released:
                    # `model_v = copy.deepcopy(model_vgg); model_vgg = model_v`, the same object across tasks)
    order: tuple = ()  # the chains' task order (default: 0, 1, 2, ...)
    optimizer_per_epoch: bool = False  # released: the SGD optimizer is created inside the epoch loop, so its
                                       # momentum restarts every epoch

    def identity(self):
        """What a run's identity adds: nothing for the clean protocol, so runs recorded before it existed keep
        theirs."""
        return {} if self == Protocol() else {"protocol": dataclasses.asdict(self)}

    def chains(self, num_tasks):
        order = list(self.order) or list(range(num_tasks))
        return [order[i:i + self.chain] for i in range(0, len(order), self.chain)]


class FewShotData:
    """Device copies of the few-shot tasks, made once each."""

    def __init__(self, split, section, device):
        self.split, self.section, self.device, self.cache = split, section, device, {}

    def __call__(self, shots, task):
        if (shots, task) not in self.cache:
            xtr, ytr, xte, yte = self.split.few_shot(self.section, shots, task)
            self.cache[(shots, task)] = (DeviceData.from_numpy(xtr, ytr, self.device),
                                         DeviceData.from_numpy(xte, yte, self.device))
        return self.cache[(shots, task)]


def plan_groups(todo, use_grouped, group_size=64):
    """Runs to train together: with grouping, those of one shot count whose method is groupable, at most
    group_size at a time (a bound on the grouped network's memory); otherwise one by one."""
    if not use_grouped:
        return [[key] for key in todo]
    groups = []
    for k in dict.fromkeys(key.shots for key in todo):
        same = [key for key in todo if key.shots == k and METHODS[key.method].groupable]
        groups += [same[i:i + group_size] for i in range(0, len(same), group_size)]
        groups += [[key] for key in todo if key.shots == k and not METHODS[key.method].groupable]
    return groups



def prepare(key, inputs, train, settings, device, num_classes=5):
    """A run's fresh model (seeded by seed, shots and task only), its inherited layers and its EWC term, or None."""
    torch.manual_seed(derived_seed(key.seed, "individual", key.shots, key.task))  # same new layers for every method
    model, inherited_layers = build_model(key.method, inputs, inputs.learngene["image_size"], num_classes)
    model.to(device)
    if METHODS[key.method].frozen:  # the optimizer skips parameters without gradients
        for p in model.inherited.parameters():
            p.requires_grad_(False)
    ewc = None
    if METHODS[key.method].ewc and settings.ewc_lambda > 0:
        names = [n for n, _ in model.named_parameters() if n.startswith(METHODS[key.method].held_prefixes)]
        params = dict(model.named_parameters())
        ewc = EWC({n: params[n] for n in names}, fisher_diagonal(model, train, names), settings.ewc_lambda)
    return model, inherited_layers, ewc


def batch_generator(key, epoch, device):
    return seeded_generator(derived_seed(key.seed, "individual-batches", key.shots, key.task, epoch), device)


def result_row(key, curve, seconds, parameters, inherited_layers, diverged, class_acc):
    """A finished run. curve: [epoch, training loss, training accuracy (%), test accuracy (%), EWC penalty] per
    evaluated epoch; diverged: a training loss or penalty was non-finite at some epoch (its accuracy is then
    meaningless, typically chance, and the tables count such runs); class_acc: after the last epoch, the test
    accuracy (%) on each class's images, in the task's label order, None for a class without test images
    (utils/shared_classes.py reads it)."""
    best = max(curve, key=lambda r: r[3])
    return {**key._asdict(), "final_acc": curve[-1][3], "best_acc": best[3], "best_epoch": best[0], "curve": curve,
            "seconds": seconds, "parameters": parameters, "inherited_layers": inherited_layers, "diverged": diverged,
            "class_acc": [None if a is None else 100 * a for a in class_acc]}


def evaluate_now(epoch, settings):
    return (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs


def train_run(key, inputs, train, test, settings, device, protocol=Protocol()):
    """One run, as its method says: SGD on the whole model, or a linear probe (which has no epochs to change)."""
    if METHODS[key.method].probe:
        return train_probe(key, inputs, train, test, settings, device)
    return train_one(key, inputs, train, test, settings, device, protocol)


def train_one(key, inputs, train, test, settings, device, protocol=Protocol()):
    t0 = time.perf_counter()
    model, inherited_layers, ewc = prepare(key, inputs, train, settings, device)
    if uses_channels_last(device, settings.precision):
        model = model.to(memory_format=torch.channels_last)
    curve, diverged, class_acc = fit(model, ewc, key, train, test, settings, device, protocol)
    return result_row(key, curve, time.perf_counter() - t0, count_parameters(model), inherited_layers, diverged,
                      class_acc)


def fit(model, ewc, key, train, test, settings, device, protocol):
    """The epochs of one task on `model`; returns (curve, diverged, class_acc) as result_row takes them."""
    optimizer = sgd(model, settings.lr, settings.momentum, settings.weight_decay)
    curve, diverged, class_acc = [], False, None
    for epoch in range(settings.epochs):
        if protocol.optimizer_per_epoch and epoch > 0:
            optimizer = sgd(model, settings.lr, settings.momentum, settings.weight_decay)
        torch.manual_seed(derived_seed(key.seed, "individual-dropout", key.shots, key.task, epoch))
        stats = train_epoch(model, optimizer, train, settings.batch_size, batch_generator(key, epoch, device),
                            extra_loss=ewc, precision=settings.precision)
        diverged = diverged or not stats.finite
        if evaluate_now(epoch, settings):
            accuracy, class_acc = evaluate(model, test, settings.precision, by_class=True)
            curve.append([epoch + 1, stats.loss, 100 * stats.accuracy, 100 * accuracy, stats.penalty])
    return curve, diverged, class_acc


def train_chain(chain, inputs, data, settings, device, protocol):
    """The runs of one chain (keys of one method, shot count and seed, in chain order): the first task's model
    is built as its method says (its initialisation, and its EWC term, anchored at the inherited weights with the
    Fisher of the first task's images, kept along the chain); every later task trains that same model on, head
    included, as the released script did. Each result records its position in the chain."""
    model, inherited_layers, ewc = prepare(chain[0], inputs, data(chain[0].shots, chain[0].task)[0], settings, device)
    if uses_channels_last(device, settings.precision):
        model = model.to(memory_format=torch.channels_last)
    results = []
    for position, key in enumerate(chain):
        t0 = time.perf_counter()
        curve, diverged, class_acc = fit(model, ewc, key, *data(key.shots, key.task), settings, device, protocol)
        row = result_row(key, curve, time.perf_counter() - t0, count_parameters(model), inherited_layers, diverged,
                         class_acc)
        results.append({**row, "chain": [k.task for k in chain], "chain_position": position})
    return results


PROBE_STEPS = 300  # full-batch Adam steps of the linear probe, lr 0.01: its loss has long flattened by then


@torch.no_grad()
def conv_features(model, images, batch_size=256):
    """A CollectiveNet's conv trunk output (after the last pooling), flattened, in eval mode and fp32."""
    model.eval()
    return torch.cat([model.trunk(normalize(images[start:start + batch_size])).flatten(1)
                      for start in range(0, len(images), batch_size)])


def train_probe(key, inputs, train, test, settings, device):
    """A linear classifier on frozen conv features (the collective model's, the joint source's, or a random
    collective network's) of the K shots and
    their mirror images, standardised with the shots' statistics, trained full-batch with cross-entropy."""
    t0 = time.perf_counter()
    torch.manual_seed(derived_seed(key.seed, "individual", key.shots, key.task))
    start = METHODS[key.method].start
    trunk = collective_net(inputs.joint if start == "joint" else inputs.collective,
                           trained=start != "random-collective").to(device)
    f_train = conv_features(trunk, torch.cat([train.images, train.images.flip(3)]))
    y_train = train.labels.repeat(2)
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_test = (f_train - mean) / std, (conv_features(trunk, test.images) - mean) / std
    linear = nn.Linear(f_train.shape[1], 5).to(device)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.01, weight_decay=settings.weight_decay)
    for _ in range(PROBE_STEPS):
        loss = nn.functional.cross_entropy(linear(f_train), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = linear(f_train)
        loss = nn.functional.cross_entropy(logits, y_train).item()
        train_acc = 100 * (logits.argmax(1) == y_train).double().mean().item()
        hits = linear(f_test).argmax(1) == test.labels
        test_acc = 100 * hits.double().mean().item()
    curve = [[settings.epochs, loss, train_acc, test_acc, 0.0]]
    return result_row(key, curve, time.perf_counter() - t0, count_parameters(linear), None, not math.isfinite(loss),
                      class_accuracy(hits, test.labels, linear.out_features))


def train_grouped(group, inputs, data, settings, device):
    """Train the runs of `group` (one shot count, the individual architecture) together; see utils/grouped.py."""
    t0 = time.perf_counter()
    models, layers, anchors, fishers = [], [], [], []
    for key in group:
        model, inherited_layers, ewc = prepare(key, inputs, data(key.shots, key.task)[0], settings, device)
        models.append(model)
        layers.append(inherited_layers)
        # the run's own EWC term, as one by one: its anchor and Fisher; zero importance where it has none (every
        # conv block has an entry, so that runs holding the learngene's blocks and runs holding all group together)
        held = {n: p.detach() for n, p in model.named_parameters() if n.startswith(("front.", "inherited."))}
        anchors.append({n: (ewc.anchor[n] if ewc is not None and n in ewc.anchor else p) for n, p in held.items()})
        fishers.append({n: (ewc.fisher[n] if ewc is not None and n in ewc.fisher else torch.zeros_like(p))
                        for n, p in held.items()})
    names = grouped.grouped_names(models[0])
    network = grouped.GroupedIndividual(models).to(device)
    penalties = None
    if any(f.any() for fisher in fishers for f in fisher.values()):
        # each model's own penalty; a model without EWC has zero importance
        ewc = EWC(grouped.group_tensors(anchors, names), grouped.group_tensors(fishers, names), settings.ewc_lambda)
        penalties = functools.partial(ewc.penalty, groups=len(group))
    train = [data(key.shots, key.task)[0] for key in group]
    test = [data(key.shots, key.task)[1] for key in group]
    x_train, y_train = torch.stack([d.images for d in train]), torch.stack([d.labels for d in train])
    x_test, y_test = torch.stack([d.images for d in test]), torch.stack([d.labels for d in test])
    optimizer = sgd(network, settings.lr, settings.momentum, settings.weight_decay)
    curves, diverged = [[] for _ in group], [False] * len(group)
    for epoch in range(settings.epochs):
        generators = [batch_generator(key, epoch, device) for key in group]
        stats = grouped.train_epoch_grouped(network, optimizer, x_train, y_train, settings.batch_size, generators,
                                            extra_loss=penalties, precision=settings.precision)
        diverged = [d or not st.finite for d, st in zip(diverged, stats)]
        if evaluate_now(epoch, settings):
            test_accs, class_accs = grouped.evaluate_grouped(network, x_test, y_test, settings.precision)
            for i, st in enumerate(stats):
                curves[i].append([epoch + 1, st.loss, 100 * st.accuracy, 100 * test_accs[i], st.penalty])
    seconds = (time.perf_counter() - t0) / len(group)
    return [result_row(key, curves[i], seconds, count_parameters(models[i]), layers[i], diverged[i], class_accs[i])
            for i, key in enumerate(group)]


