"""The field trainer's device option: names checked when read, CUDA checked when the trainer is
built, the CPU path unchanged (``cpu`` and ``auto`` train identically), every tensor of a step on
the trainer's device, CPU results and checkpoints that load on any device and with either
hash-grid implementation. The CUDA cases are marked ``gpu`` and skipped without CUDA."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.field import encodings
from panoptic_mapper.core.field._torch_ref import hash_grid_encode
from panoptic_mapper.core.field.config import (GRID_NAMES, FieldTrainingConfig, HashGridConfig,
                                               TrainerConfig)
from panoptic_mapper.core.field.device import (resolve_device, resolve_training_device,
                                               seeded_init)
from panoptic_mapper.core.field.encodings import HashGridEncoding
from panoptic_mapper.core.field.optimizer import match_state_shapes
from panoptic_mapper.core.mapping.refined_map import RefinedMapConfig, RefinedPanopticMap

sys.path.insert(0, str(Path(__file__).parent))
from field_toy_scene import ToyPriorMap, make_toy_scene  # noqa: E402
from field_toy_scene import one_torch_thread  # noqa: E402,F401 (autouse)
from field_toy_scene import integrated_refined_map as _integrated  # noqa: E402
from field_toy_scene import refined_config  # noqa: E402

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.fixture(scope="module")
def toy_scene():
    return make_toy_scene(num_frames=8, width=48, height=36)


def _config(device: str, total_steps: int = 10):
    config = refined_config(total_steps, ready_fraction=0.3)
    config.training.trainer.device = device
    return config


def _tensors(value):
    """Every tensor in a nested state dict."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_cuda_devices(monkeypatch):
    """torch reports two CUDA devices (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


# ---- resolving the name -----------------------------------------------------------------------
def test_device_names_are_checked_when_the_config_is_read():
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert TrainerConfig(device=name).device == name
    assert TrainerConfig().device == "auto"
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "mps", ""):
        with pytest.raises(ConfigError, match="device.*'auto', 'cpu', 'cuda' or 'cuda:N'"):
            TrainerConfig(device=bad)
    with pytest.raises(ConfigError, match=r"training\.trainer\.device"):
        RefinedMapConfig.from_dict({"training": {"trainer": {"device": "cuda1"}}})


def test_without_cuda_auto_is_the_cpu_and_cuda_is_a_clear_error(no_cuda, toy_scene):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"trainer\.device='{name}': CUDA is not "
                                              r"available.*use 'auto'.*or 'cpu'"):
            resolve_device(name)
    # when the refined map (and so its trainer) is built, naming the key under the map
    with pytest.raises(ConfigError, match=r"training\.trainer\.device='cuda': CUDA is not"):
        RefinedPanopticMap(toy_scene.registry, _config("cuda"), prior=ToyPriorMap(toy_scene))
    assert RefinedPanopticMap(toy_scene.registry, _config("auto"),
                              prior=ToyPriorMap(toy_scene)).trainer.device.type == "cpu"


def test_with_cuda_auto_takes_it_and_indices_are_checked(two_cuda_devices):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"cuda:2.*2 CUDA device\(s\), cuda:0\.\.cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("grid", GRID_NAMES)
def test_tcnn_needs_a_cuda_trainer_device(grid, no_cuda, monkeypatch):
    tcnn = {"field": {grid: {"implementation": "tcnn"}}}
    with pytest.raises(ConfigError, match=rf"field\.{grid}\.implementation.*'cpu'"):
        FieldTrainingConfig.from_dict({**tcnn, "trainer": {"device": "cpu"}})
    config = FieldTrainingConfig.from_dict(tcnn)  # auto: decided on the machine
    with pytest.raises(ConfigError, match=rf"field\.{grid}\.implementation.*placed on cpu.*"
                                          r"trainer\.device 'auto' means cpu here"):
        resolve_training_device(config)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(encodings, "tcnn_available", lambda: True)
    assert resolve_training_device(config) == torch.device("cuda", 0)
    monkeypatch.setattr(encodings, "tcnn_available", lambda: False)
    with pytest.raises(ConfigError, match=rf"field\.{grid}\.implementation.*tinycudann"):
        resolve_training_device(config)


# ---- training ---------------------------------------------------------------------------------
def test_cpu_and_auto_train_identically_on_the_cpu(no_cuda, toy_scene):
    runs = {}
    for device in ("cpu", "auto"):
        refined = _integrated(toy_scene, _config(device))
        torch.manual_seed(0)  # the decoders' initialisation
        runs[device] = []
        for _ in range(6):  # geometry, segmentation, panoptic phases and a maintenance
            refined.train_steps(1)
            runs[device].append(refined.progress().losses)
        runs[device].append({name: value.detach().clone() for name, value in
                             refined.trainer.field.state_dict().items()})
    assert "panoptic" in runs["cpu"][-2]
    assert runs["cpu"][:-1] == runs["auto"][:-1]  # exactly, step by step
    for name, value in runs["cpu"][-1].items():
        torch.testing.assert_close(runs["auto"][-1][name], value, rtol=0, atol=0)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_every_tensor_of_a_step_lives_on_the_trainer_device(device, toy_scene):
    refined = _integrated(toy_scene, _config(device))
    refined.train_steps(1)
    trainer = refined.trainer
    assert trainer.device.type == device
    seen = []
    encodings_ = (trainer.field.sdf_encoding, trainer.field.semantic_encoding,
                  trainer.field.instance_encoding)
    hooks = [e.register_forward_pre_hook(lambda _, args: seen.append(args[0].device))
             for e in encodings_]
    try:
        refined.train_steps(4)  # segmentation, panoptic loss, token maintenance
    finally:
        for hook in hooks:
            hook.remove()
    assert trainer.progress().losses.keys() >= {"panoptic", "instance_bce", "prior_distill"}
    assert seen and {d.type for d in seen} == {device}
    for name, tensor in [*trainer.field.named_parameters(), *trainer.field.named_buffers()]:
        assert tensor.device.type == device, name
    moments = [v for state in trainer.optimizer.state.values() for k, v in state.items()
               if k != "step"]
    assert moments and {m.device.type for m in moments} == {device}
    prediction = trainer.predict(toy_scene.mesh.vertices_m[:100])
    for tensor in (prediction.sdf_m, prediction.semantic_probs, prediction.token_masks,
                   prediction.token_class_probs):
        assert tensor.device.type == "cpu"
    assert {t.device.type for t in _tensors(trainer.state_dict())} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_map_trained_on_cuda_loads_and_trains_on_the_cpu(toy_scene, tmp_path):
    trained = _integrated(toy_scene, _config("cuda"))
    trained.train_steps(5)
    path = tmp_path / "cuda.npz"
    trained.save(path)
    restored = RefinedPanopticMap(toy_scene.registry, _config("cpu"),
                                  prior=ToyPriorMap(toy_scene))
    restored.load(path)
    assert restored.trainer.device.type == "cpu" and restored.trainer.step_count == 5
    points = toy_scene.mesh.vertices_m[::20]
    for a, b in zip(restored.query_labels(points), trained.query_labels(points)):
        np.testing.assert_array_equal(a, b)
    restored.train_steps(1)
    assert np.isfinite(restored.progress().losses["total"])


# ---- checkpoints ------------------------------------------------------------------------------
def _with_saved_config(path: Path, out: Path, edit) -> Path:
    with np.load(path) as data:
        members = {name: data[name] for name in data.files}
    meta = json.loads(bytes(members["meta"]).decode())
    edit(meta["config"])
    members["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(out, **members)
    return out


def _as_if_trained_with_tcnn_on_cuda(config: dict) -> None:
    config["training"]["trainer"]["device"] = "cuda"
    for name in GRID_NAMES:
        config["training"]["field"][name]["implementation"] = "tcnn"


def test_a_loaded_map_keeps_this_machines_device_and_grids(no_cuda, toy_scene, tmp_path):
    trained = _integrated(toy_scene, _config("cpu"))
    trained.train_steps(4)
    trained.save(tmp_path / "map.npz")
    gpu_file = _with_saved_config(tmp_path / "map.npz", tmp_path / "gpu.npz",
                                  _as_if_trained_with_tcnn_on_cuda)
    restored = RefinedPanopticMap(toy_scene.registry, _config("auto", total_steps=99),
                                  prior=ToyPriorMap(toy_scene))
    restored.load(gpu_file)
    config = restored.config.training
    assert config.trainer.total_steps == 10  # the file's configuration ...
    assert config.trainer.device == "auto"  # ... but this machine's device and grids
    assert {getattr(config.field, name).implementation for name in GRID_NAMES} == {"auto"}
    assert restored.trainer.device.type == "cpu" and restored.trainer.step_count == 4
    restored.train_steps(1)
    trained.train_steps(1)
    assert restored.progress().losses == pytest.approx(trained.progress().losses, rel=1e-4)


class _FakeTcnnEncoding(nn.Module):
    """What HashGridEncoding sees of ``tinycudann.Encoding``: one flat ``params`` leaf (here
    on the CPU, computing with the torch reference)."""

    def __init__(self, config: HashGridConfig, layout):
        super().__init__()
        self.features = config.features_per_level
        self.layout = layout.tensors()
        self.params = nn.Parameter(torch.empty(layout.total_entries * self.features)
                                   .uniform_(-1e-4, 1e-4))

    def forward(self, points01):
        return hash_grid_encode(points01, self.params.view(-1, self.features), **self.layout)


def test_grid_checkpoints_move_between_tcnn_and_torch(monkeypatch):
    monkeypatch.setattr(encodings, "tcnn_available", lambda: True)
    monkeypatch.setattr(encodings, "_make_tcnn_encoding", _FakeTcnnEncoding)
    config = HashGridConfig(num_levels=4, features_per_level=2, log2_hashmap_size=10,
                            base_resolution=4, max_resolution=64)
    fast = HashGridEncoding(config.replace(implementation="tcnn"), device="cuda")
    reference = HashGridEncoding(config.replace(implementation="torch"))
    assert fast.implementation == "tcnn"
    state = fast.state_dict()
    assert list(state) == ["_table"] and state["_table"].shape == reference.table().shape
    points = torch.rand(256, 3, generator=torch.Generator().manual_seed(0))
    reference.load_state_dict(state)
    torch.testing.assert_close(reference(points), fast(points))
    with torch.no_grad():
        reference.table().mul_(3.0)
    fast.load_state_dict(reference.state_dict())
    torch.testing.assert_close(fast(points), reference(points))
    # Adam moments saved for the [P, F] torch table fit tiny-cuda-nn's flat parameters
    saved_optimizer = torch.optim.Adam(reference.parameters())
    reference(points).square().sum().backward()
    saved_optimizer.step()
    optimizer = torch.optim.Adam(fast.parameters())
    optimizer.load_state_dict(saved_optimizer.state_dict())
    match_state_shapes(optimizer)
    moments = optimizer.state[fast._tcnn.params]
    assert moments["exp_avg"].shape == fast._tcnn.params.shape
    torch.testing.assert_close(moments["exp_avg"].view_as(reference.table()),
                               saved_optimizer.state[reference.table()]["exp_avg"])
    fast(points).square().sum().backward()
    optimizer.step()


def test_a_run_repeats_and_leaves_the_global_random_state_alone(toy_scene):
    # The decoders and hash tables are drawn from the trainer's seed, not from whatever torch's
    # global generator holds: two maps built from one config train to the same field.
    fields = []
    for noise in range(2):
        torch.rand(noise + 1)  # a caller that used the global generator differently
        refined = _integrated(toy_scene, refined_config(4))
        refined.train_steps(3)
        fields.append(refined.trainer.field.state_dict())
    assert fields[0].keys() == fields[1].keys()
    for key in fields[0]:
        torch.testing.assert_close(fields[0][key], fields[1][key], rtol=0, atol=0)
    state = torch.get_rng_state()
    with seeded_init(7, torch.device("cpu")):
        first = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), state)
    with seeded_init(7, torch.device("cpu")):
        assert torch.equal(torch.rand(3), first)
