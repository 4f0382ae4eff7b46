import pytest
import torch

from kdforge.config import DataConfig, TrainConfig
from kdforge.errors import UserError
from kdforge.train.data import batch_augmentation, build_data
from kdforge.train.methods import method_class
from kdforge.train.models import create_model
from kdforge.train.trainer import fit
from kdforge.untrusted import load_torch

DATA = build_data(DataConfig(), seed=0)
CFG = TrainConfig(epochs=3, batch_size=128, lr=0.05)


def _distiller():
    torch.manual_seed(0)
    ce = method_class("ce")
    return ce(create_model("resnet8", 10, 1), None, ce.Options())


class StopAfter:
    """A batch augmentation that interrupts training after `n` batches, like a kill mid-epoch."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0
        self.augment = batch_augmentation(DataConfig())

    def __call__(self, x, uniforms):
        self.seen += 1
        if self.seen > self.n:
            raise KeyboardInterrupt
        return self.augment(x, uniforms)


def test_resumed_training_ends_where_uninterrupted_training_does(tmp_path):
    reference = fit(_distiller(), DATA, CFG, tmp_path / "a.pt", "fp", torch.device("cpu"), 0, batch_augmentation(DataConfig()))
    steps_per_epoch = len(DATA.train) // CFG.batch_size
    with pytest.raises(KeyboardInterrupt):
        fit(_distiller(), DATA, CFG, tmp_path / "b.pt", "fp", torch.device("cpu"), 0, StopAfter(steps_per_epoch + 3))
    resumed = fit(_distiller(), DATA, CFG, tmp_path / "b.pt", "fp", torch.device("cpu"), 0, batch_augmentation(DataConfig()))
    assert resumed.resumed_from_epoch == 1
    assert resumed.test_accuracy == reference.test_accuracy
    a, b = load_torch(tmp_path / "a.pt", "a"), load_torch(tmp_path / "b.pt", "b")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_checkpoint_of_another_fingerprint_is_not_resumed(tmp_path):
    fit(_distiller(), DATA, TrainConfig(epochs=1, batch_size=128), tmp_path / "c.pt", "old", torch.device("cpu"), 0)
    result = fit(_distiller(), DATA, TrainConfig(epochs=1, batch_size=128), tmp_path / "c.pt", "new", torch.device("cpu"), 0)
    assert result.resumed_from_epoch == 0 and len(result.history) == 1


def test_nan_loss_stops_with_one_sentence_and_keeps_the_checkpoint(tmp_path):
    ckpt = tmp_path / "n.pt"
    fit(_distiller(), DATA, TrainConfig(epochs=1, batch_size=128), ckpt, "fp", torch.device("cpu"), 0)
    before = ckpt.read_bytes()
    poison = lambda x, uniforms: x * float("nan")  # noqa: E731
    with pytest.raises(UserError, match="loss 'ce' became nan at epoch 1; the last good checkpoint is kept"):
        fit(_distiller(), DATA, TrainConfig(epochs=2, batch_size=128), ckpt, "fp2", torch.device("cpu"), 0, poison)
    assert ckpt.read_bytes() == before


def test_bf16_autocast_and_channels_last_train(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, amp="bf16", channels_last=True)
    result = fit(_distiller(), DATA, cfg, tmp_path / "amp.pt", "fp", torch.device("cpu"), 0)
    assert result.history[-1]["loss"] < 2.5 and result.test_accuracy > 0.1


@pytest.mark.slow  # torch.compile's first compilation takes about 35 s on this machine
def test_train_compile_runs_the_distiller_under_torch_compile(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    result = fit(_distiller(), DATA, TrainConfig(epochs=1, batch_size=128, lr=0.05, compile=True), tmp_path / "c.pt", "fp",
                 torch.device("cpu"), 0, batch_augmentation(DataConfig()))
    assert counters["stats"]["unique_graphs"] >= 1 and result.history[-1]["loss"] < 2.5


def test_the_unused_parameter_search_is_asked_of_ddp_only_where_a_step_leaves_parameters_without_gradients():
    from kdforge.train.trainer import EpochBatches, _has_unused_parameters

    batches = EpochBatches(DATA.train, CFG, 0, 1)
    assert not _has_unused_parameters(_distiller(), DATA.train, batches, torch.device("cpu"))
    with_spare = _distiller()
    with_spare.spare = torch.nn.Linear(3, 3)  # trains nothing: DDP would wait for its gradient forever without the search
    state = torch.get_rng_state()
    assert _has_unused_parameters(with_spare, DATA.train, batches, torch.device("cpu"))
    assert torch.equal(state, torch.get_rng_state())  # the probe leaves the run's RNG alone
