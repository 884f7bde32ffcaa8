"""Break the method on purpose and check that the test suite notices: each mutation below is a one-line change to
the code that breaks one of the README's scientific promises. For each, a throwaway copy of the repository (with
../shared beside it, as CI has it) gets the change and the suite runs on it; a mutation the suite passes is a
promise no test guards. Not part of the normal test run (pytest collects test_*.py only).

    .venv/bin/python tests/mutations.py                       # every mutation
    .venv/bin/python tests/mutations.py --only criterion-mean-minus-std --report /tmp/mutations.md

Each mutation first runs the tests named as its guards (fast); if they fail, the suite fails and the mutation is
caught. If they pass, the whole suite runs (`pytest -x`): caught by another test, or not caught at all. The report
lists every mutation, whether and by what it was caught, and the minutes each took.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    file: str
    old: str
    new: str
    guards: tuple = ()  # the tests expected to catch it, run first


P = "tests/test_promises.py::"
E = "tests/test_ewc_in_training.py::"
K = "tests/test_knowledge.py::"
MUTATIONS = [
    # the criterion, its default, its per-layer statistics
    Mutation("criterion-mean-minus-std", "score = mean + std over tasks", "utils/criterion.py",
             "    score = mean + std\n", "    score = mean - std\n", (P + "test_criterion_scores_are_mean_plus_std_over_tasks_of_per_task_means",)),
    Mutation("criterion-no-std", "score = mean + std over tasks", "utils/criterion.py",
             "mean, std = m.mean(0), m.std(0)", "mean, std = m.mean(0), 0 * m.std(0)",
             (P + "test_criterion_scores_are_mean_plus_std_over_tasks_of_per_task_means",)),
    Mutation("criterion-flat-threshold", "the default criterion is signed g > 5e-4", "utils/criterion.py",
             "DEFAULT_THRESHOLD = 5e-4", "DEFAULT_THRESHOLD = 5e-10",
             (P + "test_the_default_criterion_is_the_signed_gradient_above_5e_4",)),
    Mutation("criterion-default-absolute", "the default criterion is signed", "utils/collective.py",
             "criterion_abs: bool = False", "criterion_abs: bool = True",
             (P + "test_the_default_criterion_is_the_signed_gradient_above_5e_4",)),
    Mutation("criterion-absolute", "the signed criterion is signed", "utils/criterion.py",
             "torch.count_nonzero((g.abs() if absolute else g) > threshold)", "torch.count_nonzero(g.abs() > threshold)",
             ("tests/test_models.py::test_criterion_counts_gradient_entries_above_the_threshold",)),
    # the selection rule and its margin
    Mutation("selection-conv0-candidate", "the first conv is never a candidate", "utils/criterion.py",
             "windows = {s: float(score[s:s + k].mean()) for s in range(1, num_layers - k + 1)}",
             "windows = {s: float(score[s:s + k].mean()) for s in range(0, num_layers - k + 1)}",
             (P + "test_criterion_scores_are_mean_plus_std_over_tasks_of_per_task_means",)),
    Mutation("selection-tie-shallower", "an exact tie goes to the deeper window", "utils/criterion.py",
             "return sorted(windows, key=lambda s: (windows[s], -s))", "return sorted(windows, key=lambda s: (windows[s], s))",
             (P + "test_an_exact_tie_goes_to_the_deeper_window",)),
    Mutation("selection-highest", "the learngene is the lowest-scoring window", "utils/criterion.py",
             "return sorted(windows, key=lambda s: (windows[s], -s))", "return sorted(windows, key=lambda s: (-windows[s], -s))",
             ("tests/test_models.py::test_selection_rule_picks_the_settled_window",)),
    Mutation("margin-sign", "the margin is the second window's score minus the best's", "utils/criterion.py",
             "return windows[order[1]] - windows[order[0]] if len(order) > 1 else 0.0",
             "return windows[order[0]] - windows[order[1]] if len(order) > 1 else 0.0",
             (P + "test_the_margin_is_the_second_best_windows_score_minus_the_best",)),
    # the extraction task
    Mutation("extract-last-task", "the learngene is cut after --extract_after_task", "utils/learngene.py",
             "source_task = min(selection.after_task, num_tasks - 1)", "source_task = num_tasks - 1",
             (P + "test_the_learngene_is_cut_from_the_checkpoint_after_the_extraction_task",)),
    # the Fisher
    Mutation("fisher-initial-batchnorm", "the Fisher is taken on re-estimated BatchNorm statistics", "utils/ewc.py",
             "def fisher_diagonal(model, data, names, chunk=16, estimate_batchnorm=True):",
             "def fisher_diagonal(model, data, names, chunk=16, estimate_batchnorm=False):",
             ("tests/test_individual.py::test_fisher_follows_the_normalisation_of_training",)),
    Mutation("fisher-abs", "the Fisher is the mean squared per-sample gradient", "utils/ewc.py",
             "fisher[k] += g[k].pow(2).sum(0)", "fisher[k] += g[k].abs().sum(0)",
             ("tests/test_models.py::test_fisher_is_the_mean_of_per_sample_squared_gradients",)),
    # EWC's effect on training and its scope
    Mutation("ewc-detached", "EWC pulls the inherited weights back", "utils/ewc.py",
             "term = f * (params[k] - self.anchor[k]).pow(2)", "term = f * (params[k].detach() - self.anchor[k]).pow(2)",
             (P + "test_ewc_holds_the_inherited_blocks_only_and_pulls_them_back",)),
    Mutation("ewc-no-lambda", "EWC's strength is lambda", "utils/ewc.py",
             "return 0.5 * self.lam * total", "return 0.5 * total",
             (P + "test_ewc_holds_the_inherited_blocks_only_and_pulls_them_back",)),
    Mutation("ewc-every-layer", "EWC holds the inherited blocks only", "utils/fewshot.py",
             'names = [n for n, _ in model.named_parameters() if n.startswith(METHODS[key.method].held_prefixes)]',
             "names = [n for n, _ in model.named_parameters()]",
             (P + "test_ewc_holds_the_inherited_blocks_only_and_pulls_them_back",)),
    # EWC acts in every loop that trains inherited blocks, not only in the EWC object
    Mutation("ewc-out-of-objective", "one-by-one training steps along the EWC gradient", "utils/engine.py",
             "objective = loss + penalty\n", "objective = loss + penalty.detach()\n",
             (E + "test_one_by_one_training_steps_along_the_ewc_gradient",)),
    Mutation("ewc-out-of-grouped-objective", "grouped training steps along each model's EWC gradient",
             "utils/grouped.py", "objective = (per_model + penalties).sum()",
             "objective = (per_model + penalties.detach()).sum()",
             (E + "test_grouped_training_steps_along_each_models_own_ewc_gradient",)),
    Mutation("ewc-dropped-one-by-one", "one-by-one training steps along the EWC gradient", "utils/fewshot.py",
             "curve, diverged, class_acc = fit(model, ewc, key, train, test, settings, device, protocol)",
             "curve, diverged, class_acc = fit(model, None, key, train, test, settings, device, protocol)",
             (E + "test_one_by_one_training_steps_along_the_ewc_gradient",)),
    Mutation("ewc-dropped-chain", "a chain steps along its EWC gradient", "utils/fewshot.py",
             "curve, diverged, class_acc = fit(model, ewc, key, *data(key.shots, key.task), settings, device, protocol)",
             "curve, diverged, class_acc = fit(model, None, key, *data(key.shots, key.task), settings, device, protocol)",
             (E + "test_a_chain_steps_along_the_ewc_gradient_of_its_first_task",)),
    Mutation("ewc-grouped-anchor-at-start", "grouped training anchors EWC where the run's EWC term does",
             "utils/fewshot.py", "(ewc.anchor[n] if ewc is not None and n in ewc.anchor else p)", "p",
             (E + "test_grouped_training_steps_along_each_models_own_ewc_gradient",)),
    Mutation("ewc-dropped-your-task", "a user's task trains with EWC", "utils/your_task.py",
             'curve, diverged, class_acc = fit(model, ewc, key, data["train"]',
             'curve, diverged, class_acc = fit(model, None, key, data["train"]',
             (E + "test_your_task_training_steps_along_the_ewc_gradient",)),
    Mutation("ewc-dropped-collective", "the collective model's EWC across tasks acts in its training",
             "utils/collective.py", "stats = train_epoch(model, optimizer, data, settings.batch_size, generator, extra_loss=ewc,",
             "stats = train_epoch(model, optimizer, data, settings.batch_size, generator, extra_loss=None,",
             (E + "test_the_collective_models_ewc_across_tasks_acts_in_its_training",)),
    # where the knowledge sits: the ladder, the capacity control, the window row
    Mutation("ladder-keeps-one-more", "a rung keeps exactly the source's first K blocks", "utils/methods.py",
             'layers = list(inputs.learngene["layers"]) if kept == "window" else list(range(kept))',
             'layers = list(inputs.learngene["layers"]) if kept == "window" else list(range(kept + 1))',
             (K + "test_a_rung_holds_the_sources_first_k_blocks_and_the_runs_fresh_weights_after_them",)),
    Mutation("capacity-control-reads-source", "the capacity control starts from no source weight",
             "utils/methods.py", 'kept = 0 if m.start == "random-collective" else m.kept_blocks',
             'kept = 1 if m.start == "random-collective" else m.kept_blocks',
             (K + "test_a_rung_holds_the_sources_first_k_blocks_and_the_runs_fresh_weights_after_them",)),
    Mutation("window-row-keeps-the-front", "the window row keeps the learngene's window of the source",
             "utils/methods.py", 'layers = list(inputs.learngene["layers"]) if kept == "window" else',
             'layers = list(range(3)) if kept == "window" else',
             (K + "test_the_window_row_holds_the_sources_learngene_window_and_nothing_else_of_it",)),
    Mutation("ladder-lone-capacity-point", "the ladder draws a curve only for a source with rows of its own",
             "utils/ladder.py", "own = own or method != CAPACITY", "own = True",
             ("tests/test_figures.py::test_the_ladder_points_are_paired_differences_and_name_only_sources_with_rows",)),
    Mutation("ladder-table-swaps-interval", "the ladder's table holds each point's difference and its interval",
             "utils/ladder.py", "for x, diff, ci, n in series]", "for x, ci, diff, n in series]",
             ("tests/test_figures.py::test_the_ladder_points_are_paired_differences_and_name_only_sources_with_rows",)),
    Mutation("rung-fresh-weights-per-source", "every rung of a task draws the same fresh weights", "utils/methods.py",
             'model = CollectiveNet(source["widths"], source["config"]["image_size"], num_classes)',
             'model = CollectiveNet(source["widths"], source["config"]["image_size"], source["config"]["num_outputs"] + num_classes)',
             (K + "test_a_rung_holds_the_sources_first_k_blocks_and_the_runs_fresh_weights_after_them",)),
    Mutation("tuned-contrasts-refuse-nothing", "a tuned contrast pairs runs that differ in their learning rate only",
             "utils/contrasts.py", 'if a[k] != b[k] and not (own_schedule and k in OWN_SCHEDULE)',
             "if a[k] != b[k] and not own_schedule",
             (K + "test_tuned_contrasts_pair_rows_at_their_own_rates_and_refuse_other_differences",)),
    # a lightweight model that inherits every layer
    Mutation("full-map-shallowest", "each block inherits the deepest layer of its shape below the next",
             "utils/methods.py", "layers.insert(0, below[-1])", "layers.insert(0, below[0])",
             (K + "test_the_full_inheritance_map_takes_for_each_block_the_deepest_layer_of_its_shape_below_the_next",)),
    Mutation("full-ewc-learngene-only", "EWC holds every inherited block of the lightweight model", "utils/methods.py",
             'return ("front.", "inherited.") if self.start in FULL_STARTS else ("inherited.",)',
             'return ("inherited.",)',
             (K + "test_ewc_holds_every_inherited_block_of_the_lightweight_model_and_nothing_else",)),
    Mutation("full-front-from-the-window", "each front block inherits the source layer of its shape", "utils/methods.py",
             '            block.load_state_dict({name: source_state[f"features.{i}.{name}"] for name in learngene.BLOCK_TENSORS})',
             '            block.load_state_dict({name: source_state[f"features.{i}.{name}"] for name in learngene.BLOCK_TENSORS}) if i in layers[-3:] else None',
             (K + "test_the_lightweight_model_holds_its_mapped_source_block_in_every_conv_block_and_a_fresh_head",)),
    # widening
    Mutation("widening-equal-shares", "widening splits outgoing weights unequally", "utils/models.py",
             "weight = 0.5 + torch.rand(len(mapping), generator=generator, dtype=torch.float64)",
             "weight = torch.ones(len(mapping), dtype=torch.float64)",
             ("tests/test_models.py::test_widened_copies_drift_apart_after_one_step",)),
    Mutation("widening-no-running-stats", "widening copies BatchNorm running statistics", "utils/models.py",
             'for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):',
             'for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias"):',
             ("tests/test_models.py::test_widening_copies_every_new_channel_including_batchnorm",)),
    # inheritance
    Mutation("inherit-nothing", "the individual model inherits the learngene's blocks", "utils/learngene.py",
             'individual.inherited.load_state_dict({k: v.to(own[k].device) for k, v in art["state"].items()})',
             "individual.inherited.load_state_dict(own)",
             ("tests/test_individual.py::test_model_construction",)),
    Mutation("cut-shifted-layer", "the learngene holds the chosen layers' weights", "utils/learngene.py",
             '"state": {f"{j}.{name}": model_state[f"features.{i}.{name}"].clone()',
             '"state": {f"{j}.{name}": model_state[f"features.{min(i + 1, 12)}.{name}"].clone()',
             (P + "test_the_learngene_is_cut_from_the_checkpoint_after_the_extraction_task",)),
    # the shared initialisation and batch order
    Mutation("init-per-method", "paired methods share the new layers' initialisation", "utils/fewshot.py",
             'torch.manual_seed(derived_seed(key.seed, "individual", key.shots, key.task))  # same new layers for every method',
             'torch.manual_seed(derived_seed(key.seed, "individual", key.shots, key.task, key.method))',
             (P + "test_paired_methods_share_the_new_layers_and_the_batch_order",)),
    Mutation("batches-per-method", "paired methods share the batch order", "utils/fewshot.py",
             'return seeded_generator(derived_seed(key.seed, "individual-batches", key.shots, key.task, epoch), device)',
             'return seeded_generator(derived_seed(key.seed, "individual-batches", key.method, key.shots, key.task, epoch), device)',
             (P + "test_paired_methods_share_the_new_layers_and_the_batch_order",)),
    # labels and test accuracy
    Mutation("test-labels-shifted", "test images carry their class's label", "utils/splits.py",
             'return (*self._gather(task["classes"], task["train"]), *self._gather(task["classes"], task["test"]))',
             'return (*self._gather(task["classes"], task["train"]), '
             '*self._gather(task["classes"][1:] + task["classes"][:1], task["test"]))',
             (P + "test_every_task_image_carries_the_label_of_its_raw_class",)),
    Mutation("continual-labels-shifted", "continual images carry their class's label", "utils/splits.py",
             "labels = [y for y, c in enumerate(classes) for _ in per_class[c]]",
             "labels = [(y + 1) % len(classes) for y, c in enumerate(classes) for _ in per_class[c]]",
             (P + "test_every_task_image_carries_the_label_of_its_raw_class",)),
    Mutation("evaluate-wrong-labels", "test accuracy compares predictions with the labels", "utils/engine.py",
             "hits.append(logits.argmax(1) == data.labels[start:start + batch_size])",
             "hits.append(logits.argmax(1) == (data.labels[start:start + batch_size] + 1) % 5)",
             (P + "test_test_accuracy_is_the_share_of_predictions_equal_to_the_labels",)),
    # what each method and probe reads
    Mutation("reads-scratch-learngene", "scratch does not read the learngene's weights", "utils/methods.py",
             '        dropped.add("learngene_sha256")\n', "        pass\n",
             ("tests/test_runstore.py::test_a_run_reads_only_its_methods_inputs",)),
    Mutation("probe-untrained", "probe-collective reads the trained collective model", "utils/fewshot.py",
             'trained=start != "random-collective"', "trained=False",
             (P + "test_each_probe_reads_the_network_its_name_says",)),
    Mutation("probe-random-trained", "probe-random reads an untrained network", "utils/fewshot.py",
             'trained=start != "random-collective"', "trained=True",
             (P + "test_each_probe_reads_the_network_its_name_says",)),
    Mutation("probe-joint-reads-collective", "probe-joint reads the joint source", "utils/fewshot.py",
             'trunk = collective_net(inputs.joint if start == "joint" else inputs.collective,',
             "trunk = collective_net(inputs.collective,",
             (P + "test_each_probe_reads_the_network_its_name_says",)),
    # paired statistics
    Mutation("paired-sign", "differences are method minus scratch", "utils/stats.py",
             'r["final_acc"] - runs[key._replace(method=baseline)]["final_acc"]',
             'runs[key._replace(method=baseline)]["final_acc"] - r["final_acc"]',
             ("tests/test_individual.py::test_paired_differences_by_hand",)),
    Mutation("interval-normal", "intervals are Student t over tasks", "utils/stats.py",
             "return T975[max(d for d in T975 if d <= samples - 1)]", "return 1.96",
             ("tests/test_individual.py::test_paired_differences_by_hand",)),
    # the released protocol's chains
    Mutation("chain-interval-over-tasks", "a chained row's interval is over its chains", "utils/released.py",
             "    if len(blocks) < 2:\n", "    if True:\n",
             ("tests/test_released.py::test_a_chained_row_has_an_interval_over_chains_and_one_over_tasks_by_hand",)),
    Mutation("class-seen-inverted", "a chained class counts as seen when an earlier task of its chain held it",
             "utils/released.py", "status = CLASS_STATUS[c not in earlier]", "status = CLASS_STATUS[c in earlier]",
             ("tests/test_released.py::test_each_classs_accuracy_is_read_by_whether_its_chain_had_trained_on_it",)),
    Mutation("overlap-counts-the-task-itself", "a chained task's overlap counts the classes of earlier tasks only",
             "utils/released.py", 'for t in r["chain"][:r["chain_position"]]))',
             'for t in r["chain"][:r["chain_position"] + 1]))',
             ("tests/test_released.py::test_the_classes_a_chain_had_already_trained_on_are_counted_by_hand",)),
    # split disjointness and independence
    Mutation("split-shared-stream", "each split section has its own random stream", "utils/splits.py",
             "        rng = _rng(seed, section)\n", "        pass  # the continual stream, where it stopped\n",
             (P + "test_each_split_section_draws_its_own_random_stream",)),
    Mutation("heldout-not-excluded", "held-out images are in no continual task", "utils/splits.py",
             "available = available[~np.isin(available, heldout[c])]", "available = available",
             ("tests/test_data_makers.py::test_heldout_images_are_never_in_a_continual_task",)),
    Mutation("shots-from-test", "few-shot training images are never test images", "utils/splits.py",
             '"train": {c: _ids("train", order[c][:k]) for c in task_classes},',
             '"train": {c: _ids("test", source.indices_of("test", c)[:k]) for c in task_classes},',
             ("tests/test_data_makers.py::test_cifar_split_follows_the_protocol",)),
    # the source and its controls
    Mutation("joint-extra-epoch", "the joint source has the collective model's budget", "utils/joint.py",
             'epochs = args.epochs or cfg["epochs"]', 'epochs = args.epochs or cfg["epochs"] + 1',
             ("tests/test_source.py::test_joint_source_reads_base_classes_only",)),
    Mutation("permute-nothing", "the structure control shuffles the learngene's wiring", "utils/methods.py",
             "            permute_input_channels(model)\n", "            pass\n",
             ("tests/test_source.py::test_permuted_learngene_keeps_every_filters_values_and_the_batchnorm",)),
    Mutation("frozen-trains", "learngene-frozen trains nothing it inherits", "utils/fewshot.py",
             "p.requires_grad_(False)", "p.requires_grad_(True)",
             ("tests/test_source.py::test_frozen_learngene_trains_nothing_it_inherits",)),
    Mutation("bwt-sign", "backward transfer is later minus just-learned accuracy", "utils/source.py",
             '"backward_transfer": float((row[:-1] - diagonal[:-1]).mean()) if task else 0.0',
             '"backward_transfer": float((diagonal[:-1] - row[:-1]).mean()) if task else 0.0',
             ("tests/test_source.py::test_continual_learning_summary_by_hand",)),
    Mutation("heldout-all-outputs", "a task's held-out images are read as a 5-way question", "utils/source.py",
             "torch.arange(5, device=device)", "torch.arange(ck['config']['num_outputs'], device=device)",
             ("tests/test_source.py::test_collective_run_is_measured_on_held_out_images",)),
    Mutation("source-gap-unpaired", "the sources' features are compared per task, the later minus the earlier",
             "utils/source.py", "stats.mean_ci95(np.subtract(series[b], series[a]))",
             "stats.mean_ci95(np.subtract(series[b], np.mean(series[a])))",
             ("tests/test_source.py::test_the_sources_features_are_compared_task_by_task",)),
    Mutation("source-contrast-against-scratch", "each control is compared with the row it stands in for",
             "utils/contrasts.py", "diffs = per_task(results, method, shots, against)",
             'diffs = per_task(results, method, shots, "scratch")',
             ("tests/test_source.py::test_each_control_is_compared_with_the_row_it_stands_in_for_paired_per_task",)),
    Mutation("heldout-progress-ignores-weights", "a stored measurement is reused only for the weights it read",
             "utils/source.py", 'f"matrix row {i} in {precision}, weights {weights_digest(model)}"',
             'f"matrix row {i} in {precision}"',
             ("tests/test_source.py::test_a_checkpoint_trained_again_is_measured_again",)),
    Mutation("ewc-grid-on-target", "the EWC strength is tuned on the validation tasks", "utils/tuning.py",
             '"--section", "validation", "--methods",\n', '"--section", "target", "--methods",\n',
             ("tests/test_source.py::test_ewc_grid_grows_upward_only_while_its_top_is_best_and_on_validation_tasks",)),
    # every method at its best: its own learning rate, chosen on the validation tasks
    Mutation("lr-tuned-on-target", "the learning rates are tuned on the validation tasks", "utils/tuning.py",
             '"--section", "validation", "--methods", *methods, "--lr"', '"--section", "target", "--methods", *methods, "--lr"',
             ("tests/test_source.py::test_each_methods_learning_rate_is_tried_on_validation_tasks_only",)),
    Mutation("epochs-tuned-on-target", "the numbers of epochs are chosen on the validation tasks", "utils/tuning.py",
             '[*common, "--section", "validation", "--methods", *growing,', '[*common, "--section", "target", "--methods", *growing,',
             ("tests/test_source.py::test_each_methods_number_of_epochs_is_chosen_on_validation_tasks_at_its_own_rate",)),
    Mutation("epochs-longest-always", "each method trains the number of epochs its validation tasks prefer",
             "utils/tuning.py", "best = {m: max(sorted(s), key=lambda e: s[e]) for m, s in scores.items()}",
             "best = {m: max(s) for m, s in scores.items()}",
             ("tests/test_source.py::test_each_methods_number_of_epochs_is_chosen_on_validation_tasks_at_its_own_rate",)),
    Mutation("epochs-of-ignored", "a method's own number of epochs is what it trains", "utils/individual.py",
             "epochs=self.epochs_of.get(method, self.settings.epochs))", "epochs=self.settings.epochs)",
             ("tests/test_knowledge.py::test_a_methods_own_number_of_epochs_is_what_it_trains_and_what_its_runs_read",)),
    Mutation("lr-grid-never-grows", "each chosen learning rate lies inside the grid where it can", "utils/tuning.py",
             "    while new:\n", "    while new and not grid:\n",
             ("tests/test_source.py::test_each_methods_learning_rate_is_tried_on_validation_tasks_only",)),
    Mutation("stage-clock-only-at-the-end", "a running stage's time is on disk within a tick", "utils/stages.py",
             "                failed = child.wait(timeout=CLOCK_TICK) != 0\n",
             "                failed = child.wait() != 0\n",
             ("tests/test_pipeline.py::test_a_running_stage_keeps_its_time_on_disk",)),
    Mutation("class-accuracy-over-all-images", "a class's accuracy is over its own images", "utils/engine.py",
             "total = torch.bincount(labels, minlength=n_classes)[:n_classes].tolist()",
             "total = [len(labels)] * n_classes",
             (P + "test_test_accuracy_is_the_share_of_predictions_equal_to_the_labels",)),
    Mutation("class-without-images-scores-zero", "a class without test images has no accuracy, not 0%",
             "utils/engine.py", "return [c / t if t else None for c, t in zip(correct, total)]",
             "return [c / max(t, 1) for c, t in zip(correct, total)]",
             ("tests/test_models.py::test_class_accuracy_counts_every_class_of_the_head_and_none_for_a_class_without_"
              "images",)),
    Mutation("recommendation-smallest-gain", "your_task.py's default is the candidate with the largest paired gain",
             "utils/recommend.py", "best = max(complete, key=lambda m: (mean[m], -CANDIDATES.index(m)))",
             "best = min(complete, key=lambda m: (mean[m], -CANDIDATES.index(m)))",
             ("tests/test_your_task.py::test_the_recommendation_is_the_candidate_with_the_largest_paired_gain_and_"
              "carries_each_rows_settings",)),
    Mutation("recommended-settings-ignored", "each model of your_task.py trains at the settings its evidence chose",
             "individual-model/your_task.py", 'args.lr or chosen.get("lr", TrainSettings.lr)',
             "args.lr or TrainSettings.lr",
             ("tests/test_your_task.py::test_your_task_trains_what_the_recommendation_says_at_each_models_settings",)),
    Mutation("readback-unchecked", "a file read back is checked as strictly as a flag", "utils/readback.py",
             "return None if kind.holds(value) else", "return None if True else",
             ("tests/test_file_sweep.py::test_a_damaged_heldout_summary_is_refused_or_described",)),
    Mutation("heldout-matrix-cells-unchecked", "a held-out matrix read back has every cell once", "utils/source.py",
             "require(cells == [(i, j) for i in range(n) for j in range(n)]",
             "require(True or cells == [(i, j) for i in range(n) for j in range(n)]",
             ("tests/test_file_sweep.py::test_a_damaged_heldout_matrix_is_refused_or_drawn",)),
    Mutation("design-effect-ignores-sharing", "the design effect counts the classes tasks share",
             "utils/shared_classes.py", "    zz = z @ z.T\n", "    zz = np.diag(np.diag(z @ z.T))\n",
             ("tests/test_shared_classes.py::test_the_design_effect_of_a_layout_worked_by_hand",)),
    Mutation("fitted-variance-drops-classes", "the fitted interval counts the class effects the tasks share",
             "utils/shared_classes.py", "variance = sigma2 * float(weights @ (np.eye(n) + ra * a + rb * b) @ weights)",
             "variance = sigma2 * float(weights @ (np.eye(n) + rb * b) @ weights)",
             ("tests/test_shared_classes.py::test_the_crossed_fit_finds_class_effects_where_they_are_and_not_where_"
              "they_are_not",)),
    Mutation("class-test-unshuffled", "the class-effect test compares with shuffled differences",
             "utils/shared_classes.py", "statistic(rng.permutation(y)) >= observed", "statistic(y) >= observed",
             ("tests/test_shared_classes.py::test_the_permutation_test_finds_class_effects_where_they_are_and_not_in_"
              "constant_differences",)),
    Mutation("lr-best-is-worst", "each method gets the rate its validation runs preferred", "utils/report.py",
             "best = {m: max(sorted(grid, key=float), key=lambda lr: mean[m][lr]) for m in methods}",
             "best = {m: min(sorted(grid, key=float), key=lambda lr: mean[m][lr]) for m in methods}",
             ("tests/test_budget.py::test_each_methods_learning_rate_is_its_best_on_the_validation_runs",)),
    Mutation("lr-of-ignored", "a method given its own rate trains at it", "utils/individual.py",
             "return dataclasses.replace(self.settings, lr=self.lr_of.get(method, self.settings.lr),",
             "return dataclasses.replace(self.settings, lr=self.settings.lr,",
             ("tests/test_individual.py::test_each_method_trains_at_its_own_learning_rate",)),
    Mutation("shot-counts-interleaved", "a stopped study leaves whole shot counts", "utils/individual.py",
             "groups.sort(key=lambda g: g[0].shots)", "groups.sort(key=lambda g: 0)",
             ("tests/test_individual.py::test_each_method_trains_at_its_own_learning_rate",)),
    Mutation("lr-of-not-read", "a run's identity holds its method's own rate", "utils/methods.py",
             'kept[setting] = (identity.get(f"{setting}_of") or {}).get(method, kept[setting])',
             'kept[setting] = kept[setting]',
             ("tests/test_runstore.py::test_a_method_with_its_own_learning_rate_reads_that_rate_only",)),
    # the released protocol's switches (utils/fewshot.Protocol) and its decomposition (utils/released.py)
    Mutation("chain-ignored", "--chain carries the model from task to task", "utils/individual.py",
             "    if protocol.chain:\n", "    if False:\n",
             ("tests/test_released.py::test_chained_runs_are_trained_as_chains_in_the_protocols_order",)),
    Mutation("chain-fresh-second-task", "a chained task starts from the model the previous one ended with",
             "utils/fewshot.py", "        curve, diverged, class_acc = fit(model, ewc, key, *data(key.shots, key.task), settings, device, protocol)",
             "        model = prepare(key, inputs, data(key.shots, key.task)[0], settings, device)[0]; "
             "curve, diverged, class_acc = fit(model, ewc, key, *data(key.shots, key.task), settings, device, protocol)",
             ("tests/test_released.py::test_a_chained_task_starts_from_the_model_the_previous_one_ended_with",)),
    Mutation("optimizer-never-restarts", "--optimizer_per_epoch restarts the optimizer every epoch", "utils/fewshot.py",
             "if protocol.optimizer_per_epoch and epoch > 0:", "if False:",
             ("tests/test_released.py::test_the_optimizer_restarts_every_epoch_only_when_asked",)),
    Mutation("released-keeps-ewc", "--protocol released turns EWC off, as the released penalty was zero",
             "utils/individual.py", "min(RELEASED_CHAIN, num_tasks), True, 0.0",
             "min(RELEASED_CHAIN, num_tasks), True, args.ewc_lambda",
             ("tests/test_released.py::test_protocol_released_sets_the_released_choices",)),
    Mutation("chained-runs-never-resume", "an interrupted released-protocol study resumes from its runs.jsonl",
             "utils/runstore.py", "self.path, self.identity = Path(path), json.loads(json.dumps(identity))",
             "self.path, self.identity = Path(path), identity",
             ("tests/test_runstore.py::test_a_folder_whose_identity_holds_a_tuple_resumes",)),
    Mutation("decomposition-units-tasks", "the interval of a chained row is over chains", "utils/released.py",
             "    if len(blocks) < 2:\n", "    if True:\n",
             ("tests/test_released.py::test_decomposition_pairs_each_row_with_its_scratch",)),
    # the source-budget study (utils/budget.py)
    Mutation("budget-images-after-extraction", "images seen count the tasks up to the extraction only",
             "utils/budget.py", 'for task in manifest["continual"][:extraction_task + 1])',
             'for task in manifest["continual"])',
             ("tests/test_budget.py::test_images_seen_counts_the_tasks_up_to_the_extraction_once_per_epoch",)),
    Mutation("budget-drop-sign", "convergence reads how much the last epoch lowered the loss", "utils/budget.py",
             "l[-2] - l[-1] if len(l) > 1", "l[-1] - l[-2] if len(l) > 1",
             ("tests/test_budget.py::test_convergence_reads_each_tasks_last_epoch",)),
    Mutation("budget-lr-ignores-convergence", "the learning rate kept is one whose every task converged",
             "utils/budget.py", "    pool = done or list(candidates)\n", "    pool = list(candidates)\n",
             ("tests/test_budget.py::test_the_learning_rate_kept_is_the_best_held_out_one_that_converged",)),
    Mutation("budget-scratch-per-point", "scratch is trained once and reused at every source", "pipeline.py",
             "               *([\"--reuse\", *earlier] if earlier else []), \"--name\"",
             "               \"--name\"",
             ("tests/test_pipeline.py::test_budget_study_trains_the_sources_and_reuses_what_reads_none",)),
    # a user's own data: image folders and a learngene for a user's task
    Mutation("cub-split-ignored", "CUB-200-2011 keeps its official train/test split", "utils/sources.py",
             'out["train" if is_train[i] == "1" else "test"]', 'out["train" if int(i) % 2 else "test"]',
             ("tests/test_folder.py::test_cub_layout_keeps_its_official_train_test_split",)),
    Mutation("folder-test-fraction-unseeded", "a folder's held-out images are drawn with the seed",
             "utils/sources.py", 'rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(b"folder test")',
             'rng = np.random.default_rng([0, int.from_bytes(hashlib.sha256(b"folder test")',
             ("tests/test_folder.py::test_class_folders_hold_out_a_seeded_fraction",)),
    Mutation("folder-labels-shifted", "a folder's images carry their class folder's label", "utils/sources.py",
             "labels = {s: np.asarray([y for y, c in enumerate(classes)",
             "labels = {s: np.asarray([(y + 1) % len(classes) for y, c in enumerate(classes)",
             ("tests/test_folder.py::test_cub_layout_keeps_its_official_train_test_split",)),
    Mutation("folder-duplicates-allowed", "an image among both the train and the test images is refused",
             "utils/sources.py", "    if both:\n        shared = min(both)", "    if False:\n        shared = min(both)",
             ("tests/test_folder.py::test_bad_folders_are_refused_in_one_line_and_nothing_is_written",)),
    Mutation("your-task-test-on-train", "your task's accuracy is measured on its held-out images", "utils/your_task.py",
             'data["train"], data["test"], settings, device, Protocol())',
             'data["train"], data["train"], settings, device, Protocol())',
             ("tests/test_your_task.py::test_your_task_trains_saves_and_labels",)),
    Mutation("results-table-endless-difference", "a results table read back holds finite differences in points",
             "utils/draw_results.py", "    if bad is not None:\n        raise UserError(f\"{table}: {bad['label']}",
             "    if False:\n        raise UserError(f\"{table}: {bad['label']}",
             ("tests/test_file_sweep.py::test_a_damaged_results_table_is_refused_or_drawn",)),
    Mutation("records-overwritten-unasked", "kept records change only with --overwrite", "utils/keep_records.py",
             "require(args.overwrite or not changed,", "require(True or not changed,",
             ("tests/test_records.py::test_keep_records_keeps_text_records_with_relative_paths_and_replaces_nothing_unasked",)),
    Mutation("records-keep-a-half-line", "a run being appended is not kept half-written", "utils/keep_records.py",
             '        text = text[:text.rfind("\\n") + 1]\n', "",
             ("tests/test_records.py::test_keep_records_keeps_text_records_with_relative_paths_and_replaces_nothing_unasked",)),
    Mutation("records-table-rows-shifted", "a committed table is what its committed runs give", "utils/report.py",
             "best = float(np.mean([r[\"best_acc\"] for r in rs]))", "best = float(np.mean([r[\"final_acc\"] for r in rs]))",
             ("tests/test_records.py::test_every_committed_table_is_what_its_committed_runs_give",)),
]


def copy_repo(root):
    """The repository's files (tracked and untracked-but-not-ignored) under root/repo, ../shared beside it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    dest = root / "repo"
    for f in filter(None, files):
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    (root / "shared").symlink_to(REPO.parent / "shared")
    (dest / ".venv").symlink_to(REPO / ".venv")
    # a git checkout, as CI's clone is: the tests that copy the repository as a fresh clone skip without one
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=mutation", "-c", "user.email=m@example.com", "commit",
                                                  "-q", "-m", "copy"]):
        subprocess.run(["git", *args], cwd=dest, capture_output=True, check=True)
    return dest


def pytest(repo, targets):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets], cwd=repo,
                          capture_output=True, text=True)
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    skipped = proc.returncode == 0 and re.search(r"\d+ skipped", proc.stdout) is not None
    return proc.returncode, failed, time.time() - t0, skipped


def stale(m):
    """Why the mutation no longer applies to the code (its line changed), or None."""
    count = (REPO / m.file).read_text().count(m.old)
    return None if count == 1 else f"the line to change occurs {count} times in {m.file}"


def try_mutation(m):
    with tempfile.TemporaryDirectory(prefix=f"mutation-{m.name}-") as tmp:
        repo = copy_repo(Path(tmp))
        path = repo / m.file
        text = path.read_text()
        if text.count(m.old) != 1:
            return "stale", f"the line to change occurs {text.count(m.old)} times in {m.file}", 0.0
        path.write_text(text.replace(m.old, m.new))
        code, failed, seconds, skipped = pytest(repo, list(m.guards))
        if code not in (0, 5):  # 5: no test collected
            return "caught", f"by its guard {', '.join(failed) or '(an error)'}", seconds
        if skipped:  # a guard that did not run guards nothing: say so rather than fall back on the suite
            return "GUARD SKIPPED", "its guard was skipped in the copy", seconds
        # the check that every mutation still applies fails on any mutated copy: it would catch them all
        code, failed, more, _ = pytest(repo, ["tests", "--deselect",
                                              "tests/test_plumbing.py::test_every_mutation_still_applies_to_the_code"])
        if code != 0:
            return "caught", f"by {', '.join(failed) or 'an error'} (not by its guard)", seconds + more
        return "NOT CAUGHT", "the whole suite passes", seconds + more


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=None, choices=[m.name for m in MUTATIONS], metavar="NAME")
    p.add_argument("--report", default=None, metavar="OUTFILE", help="also write the report (markdown) here")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    lines = ["| mutation | promise | result | how | minutes |", "|---|---|---|---|---:|"]
    t0, caught = time.time(), 0
    for m in chosen:
        result, how, seconds = try_mutation(m)
        caught += result == "caught"
        lines.append(f"| {m.name} | {m.promise} | {result} | {how} | {seconds / 60:.1f} |")
        print(lines[-1], flush=True)
    lines.append(f"\n{caught} of {len(chosen)} mutations caught in {(time.time() - t0) / 60:.1f} minutes "
                 f"(commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True).stdout.strip()}).")
    print(lines[-1])
    if args.report:
        Path(args.report).write_text("\n".join(lines) + "\n")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    os.environ.pop("PYTEST_ADDOPTS", None)
    sys.exit(main())
