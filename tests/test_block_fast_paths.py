"""The GMamba block's eager shortcuts (issue 25) against the plain module path: residuals scaled and added in place,
the FEM fold kept between calls while its parameters are unchanged and run as in-place products, the low-band mask
kept per map size."""
import pytest
import torch

from gmamba_zoo.layers import GMambaBlock
from gmamba_zoo.layers.gssm import _cached_low_band_mask, low_band, low_band_mask


def _block(channels_last: bool = False, **kwargs) -> GMambaBlock:
    torch.manual_seed(0)
    blk = GMambaBlock(32, channels_last=channels_last, layer_scale_init_value=0.5, **kwargs)
    with torch.no_grad():  # non-trivial band weights and step sizes
        for p in blk.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return blk


def _unfused(blk: GMambaBlock, x: torch.Tensor) -> torch.Tensor:
    """The module path: a hook on ls1 (which sees the layer scale's own output) turns the fusion off."""
    handle = blk.ls1.register_forward_hook(lambda *a: None)
    try:
        return blk(x)
    finally:
        handle.remove()


@pytest.mark.parametrize('channels_last', [False, True])
def test_inplace_residuals_equal_the_module_path_in_eval(channels_last):
    blk = _block(channels_last).eval()
    x = torch.randn(2, 12, 10, 32) if channels_last else torch.randn(2, 32, 12, 10)
    with torch.no_grad():
        assert blk._inplace_residuals(x)
        x_before = x.clone()
        fused, plain = blk(x), _unfused(blk, x)
    assert torch.equal(fused, plain)  # same products and sums as the modules: bit for bit (torch.fx relies on it)
    assert torch.equal(x, x_before)  # the caller's map is never written (channels_last: it is read in place)
    assert fused.shape == x.shape and fused.is_contiguous()  # the caller's layout, as before


def test_training_takes_the_module_path():
    blk = _block().train()
    x = torch.randn(2, 32, 9, 11, requires_grad=True)
    assert not blk._inplace_residuals(x)
    with torch.no_grad():
        assert blk._inplace_residuals(x)  # train mode without autograd (no drop path here)
    fused = blk(x)
    grads_fused = torch.autograd.grad(fused.square().sum(), [x, *blk.parameters()])
    plain = _unfused(blk, x)
    grads_plain = torch.autograd.grad(plain.square().sum(), [x, *blk.parameters()])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_fused, grads_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_no_fusion_where_it_could_be_told():
    x = torch.randn(1, 32, 6, 6)
    blk = _block(drop_path=0.1).train()
    with torch.no_grad():
        assert not blk._inplace_residuals(x)  # drop path draws per sample in training
        assert blk.eval()._inplace_residuals(x)
        seen = []
        blk.mlp.register_forward_hook(lambda m, i, o: seen.append(o))  # holds the branch ls2 would scale
        assert not blk._inplace_residuals(x)
        out = blk(x)
        ref = _unfused(blk, x)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # what the hook holds was not scaled in place
    assert torch.equal(out, ref)


def test_fem_fold_follows_parameter_changes():
    blk = _block().eval()
    x = torch.randn(1, 32, 16, 16)  # H*W > 2m: FEM folds
    fem = blk.mixer.fem
    with torch.no_grad():
        blk(x)
        kept = fem._folded_cache[1]
        blk(x)
        assert fem._folded_cache[1] is kept  # unchanged parameters: no new fold
        fem.low_weight.add_(1.0)  # in place, as an optimizer step or load_state_dict
        after = blk(x)
        assert fem._folded_cache[1] is not kept
    fresh = _block().eval()
    fresh.load_state_dict(blk.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(after, fresh(x), rtol=0, atol=0)
    # a replaced parameter (a new tensor behind it) is a change too
    with torch.no_grad():
        fem.high_proj.weight.data = fem.high_proj.weight.data * 2
        assert not torch.equal(blk(x), after)


def test_fem_fold_not_kept_for_autograd():
    blk = _block().eval()
    x = torch.randn(1, 32, 16, 16)
    blk(x).sum().backward()
    assert getattr(blk.mixer.fem, '_folded_cache', None) is None
    assert blk.mixer.fem.fuse[0].weight.grad is not None


def test_kept_mask_is_the_mask_and_a_normal_tensor():
    _cached_low_band_mask.cache_clear()
    x = torch.randn(1, 3, 10, 7)
    with torch.inference_mode():
        low_inf = low_band(x)
    mask = _cached_low_band_mask(10, 7, 0.25, x.device)
    assert not mask.is_inference() and torch.equal(mask, low_band_mask(10, 7, 0.25))
    x.requires_grad_(True)
    low = low_band(x)  # autograd on: the mask is made in the graph's mode
    low.sum().backward()
    torch.testing.assert_close(low.detach(), low_inf)


@pytest.mark.parametrize('size', [(16, 16), (3, 5)])  # FEM folded (H*W > 2m) and layer by layer
@pytest.mark.parametrize('kwargs', [{}, dict(fgmm=False), dict(adaptive_fem=False), dict(scan_directions=2)])
def test_eager_inference_equals_the_graph_path(size, kwargs):
    """Everything the block does differently in eager inference (fused residuals, the FEM fold kept and run as
    in-place products, ReLU in place, FGMM's folded scale, the kept mask) against the path autograd takes."""
    blk = _block(**kwargs).eval()
    x = torch.randn(2, 32, *size)
    with torch.no_grad():
        fast = blk(x)
    graph = _unfused(blk, x.clone().requires_grad_(True))
    torch.testing.assert_close(fast, graph.detach(), rtol=1e-5, atol=2e-6)


def test_operator_calls_per_block_in_eager_inference():
    """The fixed cost docs/cpu-cost.md counts: about 130 operator calls per GMamba block (views included) at a map
    small enough for every layer to run on its own path; more would mean a shortcut stopped applying."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    blk = _block().eval()
    x = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        blk(x)  # the kept mask and fold are made on the first call
        with Count():
            blk(x)
    assert 100 <= Count.calls <= 140, Count.calls


def test_inplace_residuals_under_cpu_autocast_equal_the_module_path():
    """Under bfloat16 autocast a branch times its float32 layer scale is float32: the in-place form must not round it
    to bfloat16."""
    blk = _block().eval()
    x = torch.randn(1, 32, 12, 12)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        fast, plain = blk(x), _unfused(blk, x)
    assert fast.dtype == plain.dtype == torch.float32
    assert torch.equal(fast, plain)
