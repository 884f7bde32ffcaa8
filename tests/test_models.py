"""Networks, widening, the criterion, the selection rule and EWC."""
import pytest
import torch
import torch.nn as nn

from utils import criterion
from utils import heatmaps
from utils.engine import DeviceData, class_accuracy, evaluate, normalize
from utils.ewc import EWC, fisher_diagonal
from utils.models import (BASE_WIDTHS, WIDENING, CollectiveNet, IndividualNet, count_parameters,
                          distinct_filters, widen, widths_at)


def randomize_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1, generator=gen)
            m.running_var.uniform_(0.5, 2, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.5, 0.5, generator=gen)


@pytest.mark.parametrize("size", [32, 64, 84])
def test_widening_preserves_the_function_over_the_whole_schedule(size):
    gen = torch.Generator().manual_seed(size)
    torch.manual_seed(size)
    model = CollectiveNet(image_size=size, num_outputs=100).eval()
    randomize_bn(model, gen)
    x = torch.randn(3, 3, size, size, generator=gen)
    for task in range(1, 21):
        with torch.no_grad():
            before = model(x)
        layer, added = WIDENING[task]
        model, _ = widen(model, layer, added, gen)
        model.eval()
        with torch.no_grad():
            after = model(x)
        assert model.widths == widths_at(task)
        rel = ((after - before).abs().max() / before.abs().max()).item()
        assert rel < 1e-5, f"task {task}: relative change {rel}"
    assert model.widths == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def test_widening_copies_every_new_channel_including_batchnorm():
    gen = torch.Generator().manual_seed(0)
    model = CollectiveNet(image_size=32)
    randomize_bn(model, gen)
    wide, (mapping, shares) = widen(model, 2, 64, gen)
    old, new = model.features[2].bn, wide.features[2].bn
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(new, name)[64:], getattr(old, name)[mapping[64:]])
    nxt_old, nxt_new = model.features[3].conv.weight, wide.features[3].conv.weight
    c = int(mapping[64])
    copies = (mapping == c).nonzero().flatten()
    assert torch.allclose(nxt_new[:, copies].sum(1), nxt_old[:, c], atol=1e-7)  # split, not duplicated
    assert len(set(shares[copies].tolist())) == len(copies)  # unequally
    per_source = torch.zeros(64, dtype=torch.float64).index_add_(0, mapping, shares)
    assert torch.allclose(per_source, torch.ones(64, dtype=torch.float64))


@pytest.mark.parametrize("layer", [2, 12])
def test_widened_copies_drift_apart_after_one_step(layer):
    """The function is the same at the widening, and one SGD step makes every copy differ from its source."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = CollectiveNet(image_size=32, num_outputs=5)
    x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 5, (8,), generator=gen)
    wide, (mapping, _) = widen(model, layer, 64, gen)
    model.eval(), wide.eval()
    with torch.no_grad():
        assert torch.allclose(wide(x), model(x), rtol=1e-4, atol=1e-6)
    assert distinct_filters(wide.features[layer].conv.weight) == model.widths[layer]  # copies, for now
    wide.train()
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    nn.functional.cross_entropy(wide(x), y).backward()
    opt.step()
    weight = wide.features[layer].conv.weight.detach()
    for new in range(model.widths[layer], len(mapping)):
        assert not torch.equal(weight[new], weight[mapping[new]]), new
    assert distinct_filters(weight, tolerance=1e-9) == len(mapping)


def test_parameter_counts_match_the_paper():
    final = CollectiveNet(widths_at(20), image_size=32, num_outputs=64)
    assert abs(count_parameters(final) - 16.4e6) < 0.1e6
    ind = IndividualNet([(512, 512, False), (512, 512, False), (512, 512, True)], image_size=32)
    assert abs(count_parameters(ind) - 11.8e6) < 0.1e6
    assert abs(count_parameters(ind.inherited) - 7.1e6) < 0.1e6
    for size in (32, 64, 84):
        assert IndividualNet([(256, 256, True), (256, 256, False), (256, 256, False)], size)(
            torch.randn(2, 3, size, size)).shape == (2, 5)


def test_no_softmax_before_the_loss():
    model = CollectiveNet(image_size=32).eval()
    out = model(torch.randn(4, 3, 32, 32))
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))  # raw logits, not probabilities


# ---------------------------------------------------------------- criterion
def test_criterion_counts_gradient_entries_above_the_threshold():
    model = CollectiveNet(BASE_WIDTHS, image_size=32)
    signed = criterion.GradientCriterion(threshold=0.5)
    absolute = criterion.GradientCriterion(threshold=0.5, absolute=True)
    expected = []
    for i, w in enumerate(model.conv_weights()):
        grad = torch.zeros_like(w).flatten()
        n_pos, n_neg = i + 1, 2 * i  # i+1 large positive, 2i large negative entries
        grad[:n_pos] = 1.0
        grad[n_pos:n_pos + n_neg] = -1.0
        grad[n_pos + n_neg:] = 0.1
        w.grad = grad.view_as(w)
        expected.append((n_pos + n_neg, n_pos, w.numel()))
    for c in (signed, absolute):
        c.start_epoch()
        c(model)
        c(model)
    assert signed.variants[0] == (False, 0.5) and len(signed.variants) == 1 + len(criterion.VARIANTS)
    for i, (large, positive, n) in enumerate(expected):
        assert signed.end_epoch()[0][i] == pytest.approx(positive / n)
        assert absolute.end_epoch()[0][i] == pytest.approx(large / n)
        # the recorded variants: (|g| > 5e-10) sees every non-zero entry, (g > 5e-10) the positive ones
        row = dict(zip(signed.variants, signed.end_epoch()))
        assert row[(True, 5e-10)][i] == pytest.approx(1.0)
        assert row[(False, 5e-10)][i] == pytest.approx((n - (large - positive)) / n)


def synthetic_record(low_layers, tasks=10, layers=13, epochs=2):
    gen = torch.Generator().manual_seed(1)
    rows = []
    for t in range(tasks):
        for e in range(epochs):
            for layer in range(layers):
                base = 0.3 if layer in low_layers else 0.9
                rows.append([t, e, layer, base + 0.05 * torch.rand(1, generator=gen).item()])
    return rows


@pytest.mark.parametrize("low,expected", [({10, 11, 12}, [10, 11, 12]), ({5, 6, 7}, [5, 6, 7]),
                                          ({0, 1, 2}, [1, 2, 3])])
def test_selection_rule_picks_the_settled_window(low, expected):
    chosen, text, windows = criterion.select_layers(synthetic_record(low), k=3)
    assert chosen == expected
    assert "learngene" in text and len(windows) == 10
    assert "the criterion decides it" in text and criterion.margin(windows) > criterion.MARGIN_TOLERANCE


def test_selection_reports_a_tie_instead_of_hiding_it():
    flat = [[t, 0, layer, 0.5] for t in range(4) for layer in range(13)]
    chosen, text, windows = criterion.select_layers(flat, k=3)
    assert criterion.margin(windows) == 0.0 and "BELOW the tolerance" in text


def test_selection_rule_prefers_stable_over_merely_low():
    rows = []
    for t in range(10):
        for layer in range(13):
            v = 0.9
            if layer in (2, 3, 4):
                v = 0.1 if t % 2 else 0.9  # low on average but unsettled: mean 0.5, std 0.4
            if layer in (9, 10, 11):
                v = 0.6  # higher but settled
            rows.append([t, 0, layer, v])
    assert criterion.select_layers(rows, 3)[0] == [9, 10, 11]


def test_heatmap_png(tmp_path):
    heatmaps.criterion_heatmap(*criterion.task_layer_matrix(synthetic_record({10, 11, 12})), tmp_path / "h.png", "test",
                            [10, 11, 12])
    from PIL import Image
    assert Image.open(tmp_path / "h.png").size[0] >= 400


# ---------------------------------------------------------------- EWC
def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5))


def tiny_data(n=12):
    gen = torch.Generator().manual_seed(0)
    return DeviceData(torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8),
                      torch.randint(0, 5, (n,), generator=gen))


def test_fisher_is_the_mean_of_per_sample_squared_gradients():
    model, data = tiny_net().eval(), tiny_data()
    names = ["0.weight", "5.bias"]
    fisher = fisher_diagonal(model, data, names, chunk=5, estimate_batchnorm=False)  # its own statistics
    manual = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    for i in range(len(data)):
        model.zero_grad()
        nn.functional.cross_entropy(model(normalize(data.images[i:i + 1])), data.labels[i:i + 1]).backward()
        for n, p in model.named_parameters():
            if n in names:
                manual[n] += p.grad ** 2 / len(data)
    for n in names:
        assert torch.allclose(fisher[n], manual[n], rtol=1e-4, atol=1e-10)
        assert fisher[n].abs().sum() > 0


def test_ewc_penalty_zero_at_anchor_positive_away_and_pulls_back():
    model, data = tiny_net(), tiny_data()
    names = ["0.weight", "0.bias"]
    params = dict(model.named_parameters())
    ewc = EWC({n: params[n] for n in names}, fisher_diagonal(model, data, names), lam=100.0)
    assert ewc.penalty(model).item() == 0.0
    anchor = {n: params[n].detach().clone() for n in names}
    with torch.no_grad():
        for n in names:
            params[n].add_(0.1 * torch.randn_like(params[n]))
    penalty = ewc.penalty(model)
    assert penalty.item() > 0
    penalty.backward()
    # the gradient points away from the anchor, so a descent step moves back towards it
    dot = sum(((params[n] - anchor[n]) * params[n].grad).sum() for n in names)
    assert dot.item() > 0
    before = sum(((params[n] - anchor[n]) ** 2).sum() for n in names).item()
    with torch.no_grad():
        for n in names:
            params[n] -= 1e-3 * params[n].grad
    assert sum(((params[n] - anchor[n]) ** 2).sum() for n in names).item() < before


# ---------------------------------------------------------------- precision
def test_precision_choice():
    from utils import engine
    cpu = torch.device("cpu")
    assert engine.resolve_precision("fp32", cpu) == "fp32" and engine.resolve_precision("bf16", cpu) == "bf16"
    assert engine.resolve_precision("auto", cpu) == ("bf16" if engine.cpu_supports_bf16() else "fp32")
    model, data = tiny_net(), tiny_data(16)
    with engine.autocast(cpu, "bf16"):
        assert model(normalize(data.images)).dtype == torch.bfloat16
    with engine.autocast(cpu, "fp32"):
        assert model(normalize(data.images)).dtype == torch.float32


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_is_bit_stable_for_a_precision(precision):
    """The same seeds, the same machine and thread count: the same weights, bit for bit."""
    from utils.engine import seeded_generator, sgd, train_epoch
    results = []
    for _ in range(2):
        model, data = tiny_net(), tiny_data(24)
        opt = sgd(model, 0.1, 0.9, 5e-4)
        for epoch in range(2):
            stats = train_epoch(model, opt, data, 8, seeded_generator(epoch, torch.device("cpu")), precision=precision)
        results.append((stats.loss, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


# ---------------------------------------------------------------- batches
@pytest.mark.parametrize("n,batch_size", [(100, 32), (50, 32), (2500, 64), (33, 32), (7, 32), (1, 4), (64, 64)])
def test_an_epoch_is_even_batches_covering_every_image_once(n, batch_size):
    """No short remainder batch: 100 images at batch 32 are 25 x 4, not 32, 32, 32 and a BatchNorm batch of 4."""
    from utils.engine import batch_indices, seeded_generator
    chunks = batch_indices(n, batch_size, seeded_generator(0, torch.device("cpu")))
    sizes = [len(c) for c in chunks]
    assert len(chunks) == -(-n // batch_size) and max(sizes) <= batch_size and max(sizes) - min(sizes) <= 1
    assert sorted(torch.cat(chunks).tolist()) == list(range(n))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_small_map_convolution_is_the_convolution(size):
    """conv3x3's matrix-product path (maps of at most 2x2 on a CPU): output and gradients of nn.Conv2d, in float64."""
    from utils.models import conv3x3
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1).double()
    x = torch.randn(4, 6, size, size, dtype=torch.float64, requires_grad=True)
    ours = conv3x3(conv, x)
    ours_grads = torch.autograd.grad(ours.pow(2).sum(), (x, conv.weight, conv.bias))
    reference = conv(x)
    reference_grads = torch.autograd.grad(reference.pow(2).sum(), (x, conv.weight, conv.bias))
    assert ours.shape == reference.shape and torch.allclose(ours, reference, rtol=1e-12, atol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(ours_grads, reference_grads))


def test_criterion_reads_its_statistic_every_batch_and_the_variants_every_few():
    """Row 0 averages every batch; the side variants average the batches 0, VARIANTS_EVERY, 2 * VARIANTS_EVERY..."""
    model = CollectiveNet(BASE_WIDTHS, image_size=32)
    c = criterion.GradientCriterion()
    c.start_epoch()
    batches = 2 * criterion.VARIANTS_EVERY + 1
    for b in range(batches):
        for w in model.conv_weights():  # batch b: b + 1 entries of each layer above every threshold
            grad = torch.zeros(w.numel())
            grad[:b + 1] = 1.0
            w.grad = grad.view_as(w)
        c(model)
    sizes = torch.tensor([w.numel() for w in model.conv_weights()], dtype=torch.float64)
    rows = c.end_epoch()
    every = (sum(range(1, batches + 1)) / batches) / sizes
    sampled = [b + 1 for b in range(0, batches, criterion.VARIANTS_EVERY)]
    assert rows[0] == pytest.approx(every.tolist())
    for row in rows[1:]:
        assert row == pytest.approx(((sum(sampled) / len(sampled)) / sizes).tolist())


def test_class_accuracy_counts_every_class_of_the_head_and_none_for_a_class_without_images():
    labels = torch.tensor([0, 0, 2, 2, 2])                  # class 1 and class 3 (the head's last) have no images
    hits = torch.tensor([True, False, True, True, False])
    assert class_accuracy(hits, labels, 4) == [0.5, None, 2 / 3, None]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    data = DeviceData(torch.zeros(5, 3, 2, 2, dtype=torch.uint8), labels)
    accuracy, by_class = evaluate(model, data, by_class=True)
    assert len(by_class) == 4 and by_class[1] is None and by_class[3] is None    # sized by the model's outputs
    assert accuracy == pytest.approx((2 * by_class[0] + 3 * by_class[2]) / 5)
