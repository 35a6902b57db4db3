"""Hash-grid encoding: tiny-cuda-nn layout, hand-checked interpolation and hashing, tcnn twin."""
import numpy as np
import pytest
import torch

from panoptic_mapper.core.errors import ConfigError
from panoptic_mapper.core.field import encodings
from panoptic_mapper.core.field._torch_ref import HASH_PRIMES, HashGridLayout, hash_grid_encode
from panoptic_mapper.core.field.classes import ClassSpace
from panoptic_mapper.core.field.config import (HashGridConfig, PanopticFieldConfig,
                                               TokenConfig)
from panoptic_mapper.core.field.encodings import (HashGridEncoding, resolve_implementation,
                                                  tcnn_available)
from panoptic_mapper.core.field.gaussian_tokens import InstanceTokens
from panoptic_mapper.core.field.panoptic_field import PanopticField, SceneBox


def test_layout_follows_tcnn_formulas():
    layout = HashGridLayout.create(num_levels=3, log2_hashmap_size=12, base_resolution=4,
                                   max_resolution=16)
    # per_level_scale = 2: scales 4*2^l - 1 = 3, 7, 15; resolution = ceil(scale) + 1.
    assert layout.scales == pytest.approx((3.0, 7.0, 15.0))
    assert layout.resolutions == (4, 8, 16)
    # 4^3 = 64 and 8^3 = 512 fit 4096 entries (dense); 16^3 = 4096 fits exactly (dense).
    assert layout.sizes == (64, 512, 4096)
    assert layout.dense == (True, True, True)
    assert layout.offsets == (0, 64, 576)
    hashed = HashGridLayout.create(num_levels=2, log2_hashmap_size=8, base_resolution=4,
                                   max_resolution=8)
    assert hashed.sizes == (64, 256) and hashed.dense == (True, False)


def test_dense_level_is_trilinear_interpolation():
    layout = HashGridLayout.create(1, 12, 4, 4)  # one dense level, scale 3, resolution 4
    table = torch.arange(64, dtype=torch.float32)[:, None]  # value = flat vertex index
    x = torch.tensor([[0.5, 0.25, 0.75]])
    out = hash_grid_encode(x, table, **layout.tensors())
    # pos = 3 x + 0.5 = (2.0, 1.25, 2.75); a linear table is reproduced exactly by trilinear
    # interpolation: value = px + 4 py + 16 pz.
    assert out.item() == pytest.approx(2.0 + 4 * 1.25 + 16 * 2.75)


def test_hashed_level_uses_prime_xor_hash():
    layout = HashGridLayout.create(1, 8, 16, 16)  # 16^3 > 256: hashed
    assert layout.dense == (False,)
    table = torch.randn(256, 2)
    # A point exactly on a grid vertex (t = 0 on every axis) returns that vertex's entry.
    scale = layout.scales[0]
    vertex = np.array([3, 5, 7])
    x = torch.from_numpy(((vertex - 0.5) / scale)[None].astype(np.float32))
    expected_index = ((3 * HASH_PRIMES[0]) ^ (5 * HASH_PRIMES[1]) ^ (7 * HASH_PRIMES[2])) \
        & 0xFFFFFFFF
    out = hash_grid_encode(x, table, **layout.tensors())
    torch.testing.assert_close(out[0], table[expected_index % 256], atol=1e-5, rtol=1e-5)


def test_smoothstep_weights():
    layout = HashGridLayout.create(1, 12, 4, 4)  # scale 3: pos = 3 x + 0.5
    table = torch.zeros(64, 1)
    table[1] = 1.0  # vertex (1, 0, 0)
    x = torch.tensor([[0.8 / 3.0, 0.0, 0.0]])  # pos = (1.3, 0.5, 0.5): t = (0.3, 0.5, 0.5)
    linear = hash_grid_encode(x, table, **layout.tensors()).item()
    smooth = hash_grid_encode(x, table, **layout.tensors(), smoothstep=True).item()
    # weight of the lower x corner is 1 - w(0.3); y and z weigh 0.5 each (smoothstep(0.5) = 0.5)
    assert linear == pytest.approx(0.7 * 0.25, abs=1e-6)
    assert smooth == pytest.approx((1.0 - 0.09 * 2.4) * 0.25, abs=1e-6)


def test_module_output_shape_gradients_and_clamping():
    config = HashGridConfig(num_levels=4, features_per_level=2, log2_hashmap_size=10,
                            base_resolution=4, max_resolution=32, implementation="torch")
    encoding = HashGridEncoding(config)
    x = torch.rand(50, 3, requires_grad=True)
    out = encoding(x)
    assert out.shape == (50, 8)
    out.sum().backward()
    assert encoding.table().grad is not None and encoding.table().grad.abs().sum() > 0
    outside = encoding(torch.tensor([[1.5, -0.5, 0.5]]))
    inside = encoding(torch.tensor([[1.0, 0.0, 0.5]]))
    torch.testing.assert_close(outside, inside)


def test_requesting_tcnn_without_it_is_a_config_error():
    if tcnn_available():
        pytest.skip("tiny-cuda-nn is available here")
    with pytest.raises(ConfigError, match="tiny-cuda-nn"):
        HashGridEncoding(HashGridConfig(implementation="tcnn"))
    assert HashGridEncoding(HashGridConfig(implementation="auto")).implementation == "torch"


@pytest.mark.parametrize("tcnn_present", [True, False])
def test_auto_takes_tcnn_only_on_a_cuda_device_where_it_imports(monkeypatch, tcnn_present):
    monkeypatch.setattr(encodings, "tcnn_available", lambda: tcnn_present)
    auto = HashGridConfig(implementation="auto")
    assert resolve_implementation(auto) == "torch"
    assert resolve_implementation(auto, "cpu") == "torch"
    assert resolve_implementation(auto, "cuda") == ("tcnn" if tcnn_present else "torch")
    assert resolve_implementation(auto.replace(implementation="torch"), "cuda") == "torch"


def test_explicit_tcnn_needs_a_cuda_device_and_tinycudann(monkeypatch):
    tcnn = HashGridConfig(implementation="tcnn")
    monkeypatch.setattr(encodings, "tcnn_available", lambda: True)
    assert resolve_implementation(tcnn, torch.device("cuda", 0)) == "tcnn"
    for device in (None, "cpu"):
        with pytest.raises(ConfigError, match="CUDA tensors only.*placed on cpu"):
            resolve_implementation(tcnn, device)
    monkeypatch.setattr(encodings, "tcnn_available", lambda: False)
    with pytest.raises(ConfigError, match="tinycudann package"):
        resolve_implementation(tcnn, "cuda")


def test_tcnn_available_needs_cuda(monkeypatch):
    tcnn_available.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    try:
        assert not tcnn_available()
    finally:
        tcnn_available.cache_clear()


def test_the_cpu_field_uses_torch_grids_even_where_tcnn_is_available(monkeypatch,
                                                                       label_registry):
    monkeypatch.setattr(encodings, "tcnn_available", lambda: True)
    tokens = InstanceTokens.create(np.zeros((1, 3)), np.ones((1, 3)), np.array([1]), 32, 32,
                                   torch.Generator().manual_seed(0))
    field = PanopticField(PanopticFieldConfig(), TokenConfig(),
                          ClassSpace.from_registry(label_registry),
                          SceneBox((0.0, 0.0, 0.0), 2.0), tokens, 20.0)
    for encoding in (field.sdf_encoding, field.semantic_encoding, field.instance_encoding):
        assert encoding.implementation == "torch"
        assert encoding.table().is_leaf and encoding.table().device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann and CUDA")
@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_tcnn_and_torch_agree_forward_and_backward(interpolation):
    config = HashGridConfig(num_levels=8, features_per_level=2, log2_hashmap_size=14,
                            base_resolution=16, max_resolution=512, interpolation=interpolation)
    reference = HashGridEncoding(config.replace(implementation="torch"))
    fast = HashGridEncoding(config.replace(implementation="tcnn"), device="cuda")
    fast.load_table(reference.table().detach())
    x = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0))
    out_ref = reference(x)
    out_fast = fast(x.cuda())
    torch.testing.assert_close(out_fast.cpu(), out_ref, atol=1e-4, rtol=1e-3)
    weights = torch.randn_like(out_ref)
    (out_ref * weights).sum().backward()
    (out_fast * weights.cuda()).sum().backward()
    grad_fast = fast.table().grad if fast.table().grad is not None else \
        fast._tcnn.params.grad.view(-1, config.features_per_level)
    torch.testing.assert_close(grad_fast.cpu(), reference.table().grad, atol=1e-4, rtol=1e-3)
