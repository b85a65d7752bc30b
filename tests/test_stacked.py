"""Stacked runs (ccql_utils/core/stacked.py): N small models trained as one program give the runs that
training them one by one gives, in the same run store, checkpoints included."""
import pandas as pd
import pytest
import torch

from ccql_utils import load_run
from ccql_utils.execution import scheduler
from ccql_utils.execution import store as runs_module
from ccql_utils.core.loader import DeviceLoader
from ccql_utils.execution.scheduler import obtain
from ccql_utils.core.stacked import (StackedSGD, StackedTrainer, plan_stacks, stack_models, stack_tensors,
                                unstack_tensor)
from ccql_utils.core.train import Trainer
from ccql_utils.core.wrn import WideResNet
import conftest


def tiny_config(**overrides):
    """conftest's, over 3 epochs with an LR drop (the schedule must follow each run's own LR)."""
    return conftest.tiny_config(**{"epochs": 3, "lr_milestones": (0.5,), "batch_size": 16, **overrides})


# Three runs that differ in everything a stack allows: loss, LR, seed and class draw.
MIXED = {"CE": tiny_config(), "QL": tiny_config(loss="ql", lr=0.02, seed=1),
         "CCQL": tiny_config(loss="ccql", seed=2, class_seed=7)}


def test_stacked_model_is_exactly_the_separate_models_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    models = [WideResNet(10, 1, 7) for _ in range(3)]
    for m in models:  # the classifier starts at zero bias; make every parameter distinguishable
        torch.nn.init.normal_(m.fc.bias)
    stacked = stack_models(models)
    xs = [torch.randn(6, 3, 32, 32) for _ in models]
    ys = torch.randint(0, 7, (6, 3))
    outputs = stacked(torch.cat(xs, dim=1))                              # [B, N, K]
    torch.nn.functional.cross_entropy(outputs.flatten(0, 1), ys.flatten(), reduction="sum").div(6).backward()
    for n, (m, x) in enumerate(zip(models, xs)):
        out = m(x)
        torch.testing.assert_close(outputs[:, n], out, rtol=1e-4, atol=1e-5)
        torch.nn.functional.cross_entropy(out, ys[:, n]).backward()
    for name, p in stacked.named_parameters():
        for n, m in enumerate(models):
            own = m.get_parameter(name)
            torch.testing.assert_close(unstack_tensor(p.grad, 3, n, own), own.grad, rtol=1e-4, atol=1e-6)
    for name, buffer in stacked.named_buffers():
        for n, m in enumerate(models):
            torch.testing.assert_close(unstack_tensor(buffer, 3, n, m.get_buffer(name)), m.get_buffer(name))


def test_stacked_sgd_steps_each_model_as_torch_sgd_does_with_its_own_lr():
    torch.manual_seed(0)
    models = [WideResNet(10, 1, 5) for _ in range(2)]
    lrs = [0.1, 0.01]
    torch_sgds = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
                  for m, lr in zip(models, lrs)]
    stacked = stack_models(models)
    params = list(stacked.parameters())
    ours = StackedSGD(params, [torch.zeros_like(p) for p in params], 2, 0.9, 5e-4, True)
    ours.set_lrs(lrs)
    for _ in range(3):  # momentum matters from the second step on
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        ours.step()
        for n, (m, sgd) in enumerate(zip(models, torch_sgds)):
            for name, p in m.named_parameters():
                p.grad = unstack_tensor(grads[[k for k, _ in stacked.named_parameters()].index(name)], 2, n, p).clone()
            sgd.step()
    for name, p in stacked.named_parameters():
        for n, m in enumerate(models):
            own = m.get_parameter(name)
            torch.testing.assert_close(unstack_tensor(p.detach(), 2, n, own), own.detach(), rtol=1e-5, atol=1e-7)


def test_in_float64_a_stacked_epoch_is_each_runs_own_epoch_to_rounding(synthetic_data, tmp_path,
                                                                        monkeypatch):
    """The exactness claim without fp32 noise (which training amplifies): in float64, two
    epochs of MIXED as one stack give every run's losses, accuracies, weights and momentum as
    training it alone does, to 1e-9 relative."""
    monkeypatch.setattr(DeviceLoader, "normalize", lambda self, images, runs=1: (
        (images.double() - self.mean.double()) / self.std.double()).view(-1, 3 * runs, 32, 32))

    def trainers(where):
        made = [Trainer(c, synthetic_data, tmp_path / where / label) for label, c in MIXED.items()]
        for t in made:
            t.model.double()
        return made
    alone, together = trainers("alone"), trainers("stacked")
    stack = StackedTrainer(together)
    for epoch in range(2):
        expected = [t.train_epoch(epoch) for t in alone]
        got = stack.train_epoch(epoch)
        for n, (loss, acc) in enumerate(expected):
            assert got[0][n] == pytest.approx(loss, rel=1e-9) and got[1][n] == acc
    tests = [t.evaluate(t.test_loader) for t in alone]
    assert stack.evaluate("test") == (pytest.approx([l for l, _ in tests], rel=1e-9), [a for _, a in tests])
    stack.give_back()
    for mine, theirs in zip(together, alone):
        for name, tensor in theirs.model.state_dict().items():
            torch.testing.assert_close(mine.model.state_dict()[name], tensor, rtol=1e-9, atol=1e-12)
        for p, q in zip(mine.model.parameters(), theirs.model.parameters()):
            torch.testing.assert_close(mine.optimizer.state[p]["momentum_buffer"],
                                       theirs.optimizer.state[q]["momentum_buffer"], rtol=1e-9, atol=1e-12)


def test_stack_tensors_and_unstack_tensor_are_inverse():
    parts = [torch.randn(4, 3, 2, 2) for _ in range(3)]
    like = torch.empty(12, 3, 2, 2)
    whole = stack_tensors(parts, like)
    assert all(torch.equal(unstack_tensor(whole, 3, n, parts[0]), parts[n]) for n in range(3))


def test_plan_stacks_groups_runs_that_differ_only_in_loss_lr_seed_or_classes():
    configs = {**MIXED, "deeper": tiny_config(depth=16), "longer": tiny_config(epochs=4)}
    assert plan_stacks(configs, 8) == [["CE", "QL", "CCQL"], ["deeper"], ["longer"]]
    assert plan_stacks(configs, 2) == [["CE", "QL"], ["CCQL"], ["deeper"], ["longer"]]
    assert plan_stacks(MIXED, None) == [["CE"], ["QL"], ["CCQL"]]  # by default none on a CPU
    with pytest.raises(ValueError, match="integer >= 1"):
        plan_stacks(MIXED, 0)


def _histories(runs):
    return {label: run.history.drop(columns="seconds") for label, run in runs.items()}


def assert_same_up_to_fp32_noise(history, reference):
    """fp32 sums run in another order (grouped convolutions) and training amplifies it: epoch 1
    agrees to ~1e-6 (a wrong seed, class draw, LR or loss would differ from the first step on),
    later epochs to a few % (50 test images: one is 0.02 of accuracy). Exactness is the float64
    test's claim."""
    pd.testing.assert_frame_equal(history.iloc[:1], reference.iloc[:1], rtol=1e-2, atol=0.021)
    pd.testing.assert_frame_equal(history, reference, rtol=0.1, atol=0.1)


@pytest.fixture(scope="module")
def alone(synthetic_data, shared_tmp):
    """MIXED trained one by one: the reference (once for all test workers)."""
    return obtain(conftest.run_context(shared_tmp / "test_stacked-alone", synthetic_data, runs_per_gpu=1), MIXED)


def test_stacked_runs_equal_the_same_runs_trained_one_by_one(synthetic_data, tmp_path, alone):
    runs = obtain(conftest.run_context(tmp_path, synthetic_data, runs_per_gpu=3), MIXED)
    for label, run in runs.items():
        assert run.finished and run.status["stacked_runs"] == 3
        assert run.run_dir.name == alone[label].run_dir.name  # the same run id: the same run
        assert_same_up_to_fp32_noise(_histories(runs)[label], _histories(alone)[label])
        mine, theirs = (torch.load(r.run_dir / "checkpoint.pt", weights_only=False)
                        for r in (run, alone[label]))
        assert mine.keys() == theirs.keys() and mine["identity"] == theirs["identity"]
        assert mine["model"].keys() == theirs["model"].keys()
        # all weights as one vector; the same run trained with 1 and 2 CPU threads differs by
        # 0.3% in conv1 alone (measured)
        flat = [torch.cat([s["model"][k].double().flatten() for k in theirs["model"]]) for s in (mine, theirs)]
        assert (flat[0] - flat[1]).norm() <= 0.05 * flat[1].norm()
        momentum = [s["momentum_buffer"] for s in mine["optimizer"]["state"].values()]
        assert len(momentum) == len(theirs["optimizer"]["state"]) and all(m.abs().sum() > 0 for m in momentum)


def test_an_interrupted_stack_resumes_run_by_run_from_its_checkpoints(synthetic_data, tmp_path, alone,
                                                                       monkeypatch):
    original = runs_module._RunFiles.on_epoch

    def stop_after_first_epoch(self, history):
        original(self, history)
        if len(history) == 1 and self.run_dir.name.startswith("ccql-"):  # the last run of the stack
            raise KeyboardInterrupt
    monkeypatch.setattr(runs_module._RunFiles, "on_epoch", stop_after_first_epoch)
    ctx = conftest.run_context(tmp_path, synthetic_data, runs_per_gpu=3)
    with pytest.raises(runs_module.RunInterrupted, match="resume from epoch 2"):
        obtain(ctx, MIXED)
    stopped = {label: ctx.store.load(c) for label, c in MIXED.items()}
    assert {r.state for r in stopped.values()} == {"interrupted"}
    assert all(r.status["resume_from_epoch"] == 1 for r in stopped.values())
    monkeypatch.setattr(runs_module._RunFiles, "on_epoch", original)
    resumed = obtain(conftest.run_context(tmp_path, synthetic_data, runs_per_gpu=1), MIXED)  # each alone, from the stack's checkpoints
    for label, run in resumed.items():
        assert run.finished and run.status["resumed_from_epoch"] == 1
        assert_same_up_to_fp32_noise(_histories(resumed)[label], _histories(alone)[label])


def test_runs_at_different_epochs_stack_by_epoch_and_a_lone_one_is_built_once(synthetic_data, tmp_path,
                                                                            alone, monkeypatch):
    original = runs_module._RunFiles.on_epoch

    def stop_after_first_epoch(self, history):
        original(self, history)
        if len(history) == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(runs_module._RunFiles, "on_epoch", stop_after_first_epoch)
    ctx = conftest.run_context(tmp_path, synthetic_data, runs_per_gpu=3)
    with pytest.raises(runs_module.RunInterrupted):
        conftest.obtain_one(ctx, MIXED["CE"])  # CE now resumes from epoch 2; QL and CCQL start at epoch 1
    monkeypatch.setattr(runs_module._RunFiles, "on_epoch", original)
    built = []

    class CountingTrainer(Trainer):
        def __init__(self, config, *args, **kwargs):
            built.append(config.loss)
            super().__init__(config, *args, **kwargs)
    monkeypatch.setattr(scheduler, "Trainer", CountingTrainer)
    runs = obtain(ctx, MIXED)
    assert sorted(built) == ["ccql", "ce", "ql"], "a run's Trainer was built more than once"
    assert runs["CE"].status["resumed_from_epoch"] == 1 and "stacked_runs" not in runs["CE"].status
    assert [runs[label].status["stacked_runs"] for label in ("QL", "CCQL")] == [2, 2]
    for label, run in runs.items():
        assert run.finished
        assert_same_up_to_fp32_noise(_histories(runs)[label], _histories(alone)[label])


def test_a_diverging_run_stops_alone_and_its_stack_goes_on(synthetic_data, tmp_path, alone):
    configs = {"QL lr 1e4": tiny_config(loss="ql", lr=1e4), "CE": MIXED["CE"]}
    runs = obtain(conftest.run_context(tmp_path, synthetic_data, runs_per_gpu=2), configs)
    assert runs["QL lr 1e4"].diverged and runs["QL lr 1e4"].status["diverged_epoch"] == 1
    assert len(runs["QL lr 1e4"].history) == 1 and load_run(runs["QL lr 1e4"].run_dir).state == "diverged"
    assert runs["CE"].finished and runs["CE"].status["stacked_runs"] == 2
    assert_same_up_to_fp32_noise(_histories(runs)["CE"], _histories(alone)["CE"])


def test_the_local_executor_stacks_as_runs_per_gpu_says(synthetic_data, tmp_path):
    runs = obtain(conftest.run_context(tmp_path, synthetic_data, runs_per_gpu=2), {"CE": MIXED["CE"], "QL": MIXED["QL"]})
    assert [r.status["stacked_runs"] for r in runs.values()] == [2, 2]
    runs = obtain(conftest.run_context(tmp_path, synthetic_data), {"CCQL": MIXED["CCQL"]})  # default on a CPU: alone
    assert runs["CCQL"].finished and "stacked_runs" not in runs["CCQL"].status
