#!/usr/bin/env python
"""Run the authors' released GMamba and vGamba code beside gmamba_zoo, with the same weights.

For people who have the released repositories checked out (nothing of them is copied into this package)::

    git clone https://github.com/Xinmu-Tantai/GMamba-GSSM
    git clone https://github.com/yunusa2k2/vGamba
    pip install einops thop          # einops: the released code imports it; thop: optional, the paper's counts
    python scripts/compare_official.py --gmamba-dir GMamba-GSSM --vgamba-dir vGamba

What it does, for each repository given (docs/official-code.md explains every item):

* Imports the released file as a module, supplying what it imports and does not get: ``mamba_ssm`` is a stub whose
  ``selective_scan_fn`` is this package's (same signature) and whose ``Mamba`` runs mamba-ssm's slow (non-fused) path
  on that scan (by default even when mamba-ssm is installed: the comparisons run on CPU, where its kernels cannot;
  ``--stub-mamba-ssm if-missing`` stubs it only when it is not installed); the released GMamba file uses ``Mlp`` and
  ``DropPath`` without importing them, so timm's are put in its namespace before it runs; ``torchinfo`` and ``thop``
  (imported but unused by the released vGamba model) are stubbed when missing. The files themselves are not edited.
* Builds our module and the released one, copies our weights into the released module through an explicit key map
  (every key of both sides accounted for), and compares the outputs in float32 on CPU.
* Patches the released code's bugs at run time (monkeypatching its module namespace and classes, restored
  afterwards), so that the comparison measures the implementations rather than the bugs, then leaves each bug in
  alone to measure what it changes in the output. The GMamba block runs on the whole map as one window.
* With thop installed, counts the released vGamba as the paper did (``thop.profile`` at 224 x 224, Mamba on its
  slow path) and, for the breakdown in docs/vgamba.md, our vGamba under the same tool.

The result is printed and, with ``--json PATH``, written as JSON. Exit code 0 when every patched comparison is within
``--tol`` (default 1e-5). Nothing here says anything about trained accuracy: both sides are randomly initialised.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

import gmamba_zoo  # noqa: F401  (registers the models with timm)
from gmamba_zoo.layers.gamba import MambaMixer
from gmamba_zoo.layers.gssm import GMambaBlock, frequency_split
from gmamba_zoo.ops import selective_scan_fn

GMAMBA_FILE = 'GMamba_model/GMamba_Block.py'
VGAMBA_FILE = 'model.py'

# The released code's bugs, with where they are (file:line in the released repositories, commits 1f656d3 for
# GMamba-GSSM and b85d24d for vGamba) and what the run-time patch does.
GMAMBA_BUGS = {
    'windows': 'GMamba_Block.py:404,427-441: the block runs on 7x7 windows; patch: window_size = the map size',
    'frequency_path': 'GMamba_Block.py:103 returns the undefined name freq_weights, and :305-306, :309 use einops '
                      'patterns that do not parse (a flat axis on one side, two on the other, no group); the except at :325 swallows both, so FEM/FGMM never run. Behind '
                      'them, :294 and :312 give the importance gate the shape [B, 1, 1, 1] (the comment says '
                      '[B, 1, 1]), which would broadcast x to 4-D and fail in x_proj (:332) if the path ran; patch: '
                      'define freq_weights in the module, rewrite the two patterns, drop the gate\'s last dim',
    'dt_bias': 'GMamba_Block.py:334 adds dt_proj\'s bias and :349 passes it again as delta_bias; patch: the module\'s '
               'selective_scan_fn drops delta_bias',
    'fem_mask': 'GMamba_Block.py:82-84, :91-92 keep the top-left [H//4, (W//2+1)//4] corner of the rfft2 spectrum '
                '(one-sided in H, a 1/8 cut-off in W); patch: FEM\'s forward uses the symmetric |f| < 1/4 split '
                '(gmamba_zoo.layers.gssm.frequency_split) before the released projections and fusion',
}
VGAMBA_BUGS = {
    'cell_view': 'model.py:45 views the [B, L, C] output as [B, C, H, W] (a transpose was meant); patch: undo the '
                 'view after GambaCell.forward',
    'position_transposed': 'model.py:74-76 adds r_i . q_j to the logit of query i and key j (BoTNet: q_i . r_j); '
                           'patch: MHSA.forward with the BoTNet term',
    'unscaled_logits': 'model.py:72-76 never divides the logits by sqrt(head_dim); patch: MHSA.forward scales them',
}
VGAMBA_NOTES = {
    'registers': 'model.py:60-61, :78-95: the register "tokens" are packed beside the heads as one more head (a '
                 'learned [L, L] logit table and [d, L] values), softmaxed on their own and dropped by the unpack at '
                 ':95, so they never reach the output: compared with our model built with num_registers=0',
    'fixed_224': 'model.py:19-20, :33, :57-61: position terms and the [L, L] table are sized for the 224 grid: '
                 'compared at 224 x 224 only',
    'shortcut_bias': 'model.py:156: the shortcut conv has a bias (ours: none, timm\'s layout): set to 0',
    'dropout': 'model.py:194: Dropout(0.3) before the classifier: identity in eval mode',
}
VARIANT_DEPTHS = {'b': (3, 4, 6, 3), 'l': (3, 4, 23, 3)}


# ----------------------------------------------------------------------------------------------------------------------
# stubs for what the released files import

class StubMamba(MambaMixer):
    """``mamba_ssm.Mamba``'s interface on gmamba_zoo's scan, running mamba-ssm's slow (non-fused) path.

    Same parameter names and shapes as mamba-ssm's ``Mamba`` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj)
    and the same calls: without the fused CUDA kernel, mamba-ssm uses in_proj and dt_proj through their weights
    (their forward hooks never fire) and calls conv1d, x_proj and out_proj as modules. thop's counts depend on which
    submodules are called, so this matters for reproducing the paper's figures; the arithmetic equals
    :class:`~gmamba_zoo.layers.gamba.MambaMixer`'s.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank='auto',
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, **ignored):
        if not conv_bias or bias:
            raise NotImplementedError('StubMamba: only conv_bias=True, bias=False (mamba-ssm\'s defaults).')
        super().__init__(d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, dt_min=dt_min,
                         dt_max=dt_max, dt_init_floor=dt_init_floor)
        self.act = nn.SiLU()

    def forward(self, hidden_states: Tensor, inference_params=None) -> Tensor:
        b, length, _ = hidden_states.shape
        n, r = self.d_state, self.dt_rank
        xz = torch.matmul(hidden_states, self.in_proj.weight.t()).transpose(1, 2)  # [B, 2E, L], weight only
        x, z = xz.chunk(2, dim=1)
        x = self.act(self.conv1d(x.contiguous())[..., :length])
        dt, bs, cs = self.x_proj(x.transpose(1, 2)).split([r, n, n], dim=-1)
        dt = torch.matmul(dt, self.dt_proj.weight.t()).transpose(1, 2)  # weight only; the bias enters the scan
        y = selective_scan_fn(x, dt, -torch.exp(self.A_log.float()), bs.transpose(1, 2), cs.transpose(1, 2),
                              self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))


def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def install_stubs(stub_mamba_ssm: Optional[bool] = None) -> Dict[str, str]:
    """Put stand-ins for the released files' unavailable imports into ``sys.modules``; returns what was done.

    Args:
        stub_mamba_ssm: True: always stub ``mamba_ssm`` (its CUDA kernels cannot run on CPU tensors); False: never;
            None: only when it is not installed.
    """
    done = {}
    if stub_mamba_ssm is None:
        stub_mamba_ssm = _missing('mamba_ssm')
    if stub_mamba_ssm:
        mod = types.ModuleType('mamba_ssm')
        mod.__doc__ = 'Stand-in from gmamba_zoo scripts/compare_official.py: selective_scan_fn and Mamba on our scan.'
        mod.selective_scan_fn = selective_scan_fn
        mod.Mamba = StubMamba
        sys.modules['mamba_ssm'] = mod
        done['mamba_ssm'] = 'stub: selective_scan_fn = gmamba_zoo.ops.selective_scan_fn, Mamba = StubMamba (slow path)'
    for name, attr in (('torchinfo', 'summary'), ('thop', 'profile')):
        if name not in sys.modules and _missing(name):
            mod = types.ModuleType(name)
            mod.STUB = True

            def _unavailable(*args, _name=name, **kwargs):
                raise ImportError(f'{_name} is not installed (stubbed by compare_official.py)')
            setattr(mod, attr, _unavailable)
            sys.modules[name] = mod
            done[name] = f'stub ({attr} raises ImportError); unused by the compared code'
    return done


def _find(root: Path, relative: str) -> Path:
    root = Path(root)
    for cand in (root / relative, root / Path(relative).name):
        if cand.is_file():
            return cand
    hits = sorted(root.rglob(Path(relative).name))
    if not hits:
        raise FileNotFoundError(f'compare_official.py: no {relative} under {root}')
    return hits[0]


def load_module(path: Path, name: str, inject: Optional[Dict[str, object]] = None) -> types.ModuleType:
    """Execute a released file as module ``name``, with ``inject`` placed in its namespace before it runs."""
    if _missing('einops'):
        raise SystemExit('compare_official.py: the released code imports einops: `pip install einops`.')
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(inject or {})
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_released_gmamba(root: Path) -> types.ModuleType:
    """The released ``GMamba_Block.py``, with timm's ``Mlp`` and ``DropPath`` supplied (the file never imports them)."""
    from timm.layers import DropPath, Mlp
    return load_module(_find(root, GMAMBA_FILE), 'released_gmamba_block', {'Mlp': Mlp, 'DropPath': DropPath})


def load_released_vgamba(root: Path) -> types.ModuleType:
    return load_module(_find(root, VGAMBA_FILE), 'released_vgamba_model')


# ----------------------------------------------------------------------------------------------------------------------
# run-time patches

@contextlib.contextmanager
def _patched(target: object, name: str, value: object) -> Iterator[None]:
    """Set ``target.name = value`` for the duration; restore (or delete) afterwards."""
    missing = object()
    old = target.__dict__.get(name, missing)  # only what the object itself holds: a class attribute is not restored
    setattr(target, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(target, name)
        else:
            setattr(target, name, old)


def _gmamba_rearrange(rearrange: Callable) -> Callable:
    """einops.rearrange that accepts the released mixer's unparsable patterns: where one side has the flat axis ``l``
    and the other has ``h`` and ``w``, ``l`` is written as the group ``(h w)`` it stands for."""
    def patched(tensor, pattern, **axes):
        left, right = (side.split() for side in pattern.split('->'))
        for flat, split in ((left, right), (right, left)):
            if 'l' in flat and {'h', 'w'} <= set(split) and 'h' not in flat:
                flat[flat.index('l')] = '(h w)'
        return rearrange(tensor, ' '.join(left) + ' -> ' + ' '.join(right), **axes)
    return patched


def _fem_forward_symmetric(self, x: Tensor, H: int, W: int):
    """FEM forward with the symmetric band split (|f| < 1/4 on both axes) feeding the released module's layers."""
    b, length, d = x.shape
    img = x.transpose(1, 2).reshape(b, d, H, W)
    low, high = frequency_split(img, 0.25)
    tokens = lambda t: t.flatten(2).transpose(1, 2).to(x.dtype)
    low = self.low_freq_proj(tokens(low)) * self.weight_norm(self.low_freq_weight)
    high = self.high_freq_proj(tokens(high)) * self.weight_norm(self.high_freq_weight)
    fused = self.freq_fusion(torch.cat([x, low, high], dim=-1))
    return fused, None, {'low_freq_weight': None, 'high_freq_weight': None}


def _gate_per_sample(gate: nn.Module) -> Callable:
    """The importance gate's forward with its last (size 1) dim dropped, so that its mean over positions is [B]."""
    forward = type(gate).forward

    def patched(t: Tensor) -> Tensor:
        return forward(gate, t).squeeze(-1)
    return patched


@contextlib.contextmanager
def gmamba_patches(mod: types.ModuleType, block: nn.Module, fix: Iterable[str]) -> Iterator[None]:
    """Patch the bugs named in ``fix`` (keys of GMAMBA_BUGS except 'windows') in the released module and ``block``."""
    fix = set(fix)
    with contextlib.ExitStack() as stack:
        if 'frequency_path' in fix:
            stack.enter_context(_patched(mod, 'freq_weights', {'low_freq_weight': None, 'high_freq_weight': None}))
            stack.enter_context(_patched(mod, 'rearrange', _gmamba_rearrange(mod.rearrange)))
            gate = block.mixer.freq_gate
            stack.enter_context(_patched(gate, 'forward', _gate_per_sample(gate)))
        if 'dt_bias' in fix:
            scan = mod.selective_scan_fn

            def scan_bias_once(*args, delta_bias=None, **kwargs):  # dt already holds dt_proj's bias
                return scan(*args, delta_bias=None, **kwargs)
            stack.enter_context(_patched(mod, 'selective_scan_fn', scan_bias_once))
        if 'fem_mask' in fix:
            stack.enter_context(_patched(mod.Frequency_Encoding_Module, 'forward', _fem_forward_symmetric))
        yield


def _cell_forward_unviewed(original: Callable) -> Callable:
    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        return original(self, x).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
    return forward


def _mhsa_forward(transposed: bool, scaled: bool) -> Callable:
    """The released MHSA's computation without registers (they never reach its output), with each bug optional."""
    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        nh, d = self.head, c // self.head
        q, k, v = (proj(x).reshape(b, nh, d, h * w) for proj in (self.Q, self.K, self.V))
        r = (self.rel_h + self.rel_w).reshape(1, nh, d, h * w)  # position of token j at column j
        qt = q.transpose(-2, -1)  # [B, nh, L, d]
        if transposed:
            logits = qt @ k + r.transpose(-2, -1) @ q  # [i, j] = q_i . k_j + r_i . q_j
        else:
            logits = qt @ (k + r)  # [i, j] = q_i . (k_j + r_j)
        if scaled:
            logits = logits * d ** -0.5
        attn = self.softmax(logits)  # over keys j
        return (v @ attn.transpose(-2, -1)).reshape(b, c, h, w)
    return forward


@contextlib.contextmanager
def vgamba_patches(mod: types.ModuleType, fix: Iterable[str], replace_attention: bool = False) -> Iterator[None]:
    """Patch the released vGamba module's bugs named in ``fix`` (keys of VGAMBA_BUGS).

    ``replace_attention`` swaps in the replacement MHSA forward even when both attention bugs are kept (to check that
    it computes what the released forward computes).
    """
    fix = set(fix)
    with contextlib.ExitStack() as stack:
        if 'cell_view' in fix:
            stack.enter_context(_patched(mod.GambaCell, 'forward', _cell_forward_unviewed(mod.GambaCell.forward)))
        if replace_attention or {'position_transposed', 'unscaled_logits'} & fix:
            forward = _mhsa_forward('position_transposed' not in fix, 'unscaled_logits' in fix)
            stack.enter_context(_patched(mod.MHSA, 'forward', forward))
        yield


# ----------------------------------------------------------------------------------------------------------------------
# weights: ours -> released

def _randomise(model: nn.Module, seed: int) -> None:
    """Give the parameters that start at constants (norms, layer scales, scalar gates, BN statistics) random values,
    so that no part of either model is trivially the identity or zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit('.', 1)[-1]
            if leaf == 'gamma':
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() == 0:
                p.copy_(torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)


def gmamba_key_map(ours: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our GMambaBlock state dict -> the released GMambaBlock's (same tensors, renamed and reshaped)."""
    out = {}
    renames = [
        ('ls1.gamma', 'gamma_1'), ('ls2.gamma', 'gamma_2'),
        ('mixer.fem.low_proj.', 'mixer.freq_ssm.low_freq_proj.'),
        ('mixer.fem.high_proj.', 'mixer.freq_ssm.high_freq_proj.'),
        ('mixer.fem.low_weight', 'mixer.freq_ssm.low_freq_weight'),
        ('mixer.fem.high_weight', 'mixer.freq_ssm.high_freq_weight'),
        ('mixer.fem.fuse.', 'mixer.freq_ssm.freq_fusion.'),
        ('mixer.fgmm.enhance.', 'mixer.freq_adaptive.freq_conv.'),
        ('mixer.fgmm.importance.', 'mixer.freq_gate.'),
        ('mixer.fgmm.ratio', 'mixer.freq_ratio'),
    ]
    for key, t in ours.items():
        if key.startswith('mixer.conv1d.'):  # one conv over [x, z] -> conv1d_x, conv1d_z
            x_half, z_half = t.chunk(2, dim=0)
            leaf = key.rsplit('.', 1)[-1]
            out[f'mixer.conv1d_x.{leaf}'], out[f'mixer.conv1d_z.{leaf}'] = x_half, z_half
            continue
        if key.startswith('mixer.fgmm.select.'):  # GAP is the first module of the released Sequential
            idx, leaf = key.split('.')[-2:]
            out[f'mixer.freq_adaptive.adaptive_weight.{int(idx) + 1}.{leaf}'] = t
            continue
        new = key
        for a, b in renames:
            if key.startswith(a):
                new = b + key[len(a):]
                break
        out[new] = t
    return out


def vgamba_key_map(ours: Dict[str, Tensor], num_heads: int = 4) -> Dict[str, Tensor]:
    """Our VGamba (num_registers=0) state dict -> the released ResNet's, except the dead register tables."""
    out = {}
    for key, t in ours.items():
        new = key.replace('.downsample.', '.shortcut.').replace('.gamba.', '.conv2.0.')
        if key.startswith('fc.'):
            new = 'fc.1.' + key[3:]
        elif '.gamba.cell.' in key:
            new = new.replace('.cell.context.', '.ggnn.gate.0.').replace('.cell.mamba.', '.ggnn.mamba_block.')
            if key.endswith('.pos_h'):  # our row term; released "rel_w" [1, C, rows, 1] varies along rows
                out[new.replace('.cell.pos_h', '.ggnn.rel_w')] = t[None, :, :, None]
                continue
            if key.endswith('.pos_w'):  # our column term; released "rel_h" [1, C, 1, cols]
                out[new.replace('.cell.pos_w', '.ggnn.rel_h')] = t[None, :, None, :]
                continue
        elif '.gamba.mhsa.' in key:
            c = t.shape[0]
            if key.endswith('.qkv.weight') or key.endswith('.qkv.bias'):
                leaf = key.rsplit('.', 1)[-1]
                for name, part in zip('QKV', t.chunk(3, dim=0)):
                    out[new.replace('.mhsa.qkv.', f'.mhsa.{name}.')] = part
                continue
            d = c // num_heads
            if key.endswith('.rel_h'):  # our row term -> released "rel_w" [1, heads, d, rows, 1]
                out[new.replace('.mhsa.rel_h', '.mhsa.rel_w')] = t.reshape(1, num_heads, d, -1, 1)
                continue
            if key.endswith('.rel_w'):  # our column term -> released "rel_h" [1, heads, d, 1, cols]
                out[new.replace('.mhsa.rel_w', '.mhsa.rel_h')] = t.reshape(1, num_heads, d, 1, -1)
                continue
        elif '.gamba.fusion.' in key:
            new = new.replace('.fusion.', '.gating.')
        out[new] = t
    return out


def load_mapped(released: nn.Module, mapped: Dict[str, Tensor], allow_fresh: Sequence[str] = (),
                zero: Sequence[str] = ()) -> None:
    """Copy ``mapped`` into ``released``; every released key must be mapped, zeroed or allowed to stay as it is."""
    target = released.state_dict()
    extra = sorted(set(mapped) - set(target))
    left = [k for k in target if k not in mapped and not any(s in k for s in tuple(allow_fresh) + tuple(zero))]
    bad = [k for k in mapped if k in target and mapped[k].numel() != target[k].numel()]
    if extra or left or bad:
        raise RuntimeError(f'key map does not fit the released module: unmapped ours {extra[:8]}, released keys left '
                           f'{left[:8]}, size mismatches {bad[:8]}')
    state = {k: (mapped[k].reshape(v.shape) if k in mapped else
                 torch.zeros_like(v) if any(s in k for s in zero) else v) for k, v in target.items()}
    released.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------------------------
# comparisons

def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def compare_gmamba(mod: types.ModuleType, dim: int = 32, size: int = 14, batch: int = 2, seed: int = 0,
                   window_size: Optional[int] = None) -> Dict[str, object]:
    """Our GMambaBlock against the released one (same weights); each bug patched, then each left in alone.

    Args:
        window_size: Compare with our block's ``window_size`` option (when it exists) against the released block's
            own windows of that size, every other bug patched.
    """
    torch.manual_seed(seed)
    kwargs = {} if window_size is None else {'window_size': window_size}
    ours = GMambaBlock(dim, layer_scale_init_value=1.0, **kwargs).eval()
    _randomise(ours, seed)
    released = mod.GMambaBlock(dim, counter=0, transformer_blocks=(), layer_scale=1.0).eval()
    load_mapped(released, gmamba_key_map(ours.state_dict()))
    x = torch.randn(batch, dim, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = ours(x)
        branch = float((y - x).abs().max())  # how large the block's residual branches are, for scale

        def run(leave: Sequence[str] = ()) -> Tensor:
            fix = set(GMAMBA_BUGS) - set(leave)
            released.window_size = size if 'windows' in fix else (window_size or 7)
            with gmamba_patches(mod, released, fix):
                return released(x)
        result = {'shape': [batch, dim, size, size], 'residual_branch_max_abs': branch}
        if window_size is not None:
            result[f'ours window_size={window_size} vs released windows, other bugs patched'] = \
                _max_diff(y, run(['windows']))
            return result
        result['all bugs patched'] = _max_diff(y, run())
        result['each bug left in alone'] = {bug: _max_diff(y, run([bug])) for bug in GMAMBA_BUGS}
        result['as released (all bugs)'] = _max_diff(y, run(list(GMAMBA_BUGS)))
        # The released frequency path does not run as published: show it (its own error message).
        released.window_size = size
        released.mixer._debug_mode = True
        try:
            import io
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                released(x)
            result['released frequency path, as published'] = ' '.join(
                line.strip() for line in buf.getvalue().splitlines() if 'Error' in line or 'error' in line)[:300]
        finally:
            released.mixer._debug_mode = False
    return result


def compare_gamba_block(mod: types.ModuleType, planes: int = 256, size: int = 14, batch: int = 2,
                        seed: int = 0) -> Dict[str, object]:
    """Our GambaBlock (num_registers=0) against the released one at its own grid (same weights): the block output,
    each bug patched, then each left in alone. The place to see what a bug does, before a deep network's residual
    branches and norms shrink or blow it up."""
    from gmamba_zoo.layers.gamba import GambaBlock
    torch.manual_seed(seed)
    ours = GambaBlock(planes, size, num_registers=0).eval()
    released = mod.GambaBlock(planes, height=size, width=size, heads=4).eval()
    mapped = vgamba_key_map({'x.gamba.' + k: v for k, v in ours.state_dict().items()})
    load_mapped(released, {k[len('x.conv2.0.'):]: v for k, v in mapped.items()}, allow_fresh=('register_tokens',))
    x = torch.randn(batch, planes, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = ours(x)

        def run(leave: Sequence[str] = ()) -> Tensor:
            with vgamba_patches(mod, set(VGAMBA_BUGS) - set(leave)):
                return released(x)
        return {'shape': [batch, planes, size, size], 'output_max_abs': float(y.abs().max()),
                'all bugs patched': _max_diff(y, run()),
                'each bug left in alone': {bug: _max_diff(y, run([bug])) for bug in VGAMBA_BUGS},
                'as released (all bugs)': _max_diff(y, run(list(VGAMBA_BUGS)))}


def _build_ours_vgamba(variant: str, seed: int) -> nn.Module:
    import timm
    torch.manual_seed(seed)
    ours = timm.create_model(f'vgamba_{variant}', num_registers=0, zero_init_last=False).eval()
    _randomise(ours, seed)
    with torch.no_grad():  # small residual branches, so that 33 random blocks (vGamba-L) keep finite activations
        for name, m in ours.named_modules():
            if name.endswith('.bn3'):
                m.weight.mul_(0.2)
    return ours


def build_released_vgamba(mod: types.ModuleType, variant: str) -> nn.Module:
    return mod.ResNet(mod.Bottleneck, list(VARIANT_DEPTHS[variant]), num_classes=1000, resolution=(224, 224), heads=4)


def compare_vgamba(mod: types.ModuleType, variant: str = 'b', batch: int = 2, seed: int = 0,
                   per_bug: bool = True) -> Dict[str, object]:
    """Our vGamba (num_registers=0) against the released ResNet (same weights), logits at 224 x 224."""
    ours = _build_ours_vgamba(variant, seed)
    torch.manual_seed(seed)
    released = build_released_vgamba(mod, variant).eval()
    load_mapped(released, vgamba_key_map(ours.state_dict()), allow_fresh=('register_tokens',),
                zero=('shortcut.0.bias',))
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed + 1))
    result: Dict[str, object] = {'variant': f'vgamba_{variant}', 'shape': [batch, 3, 224, 224]}
    with torch.no_grad():
        y = ours(x)
        result['logits_max_abs'] = float(y.abs().max())

        def run(leave: Sequence[str] = ()) -> Tensor:
            with vgamba_patches(mod, set(VGAMBA_BUGS) - set(leave)):
                return released(x)
        result['all bugs patched'] = _max_diff(y, run())
        if per_bug:
            result['each bug left in alone'] = {bug: _max_diff(y, run([bug])) for bug in VGAMBA_BUGS}
            as_released = released(x)
            result['as released (all bugs)'] = _max_diff(y, as_released)
            # the replacement attention with both bugs kept, against the released forward itself
            with vgamba_patches(mod, (), replace_attention=True):
                result['replacement MHSA forward with both bugs kept vs released, whole model as released'] = \
                    _max_diff(as_released, released(x))
    return result


def _thop_types() -> Optional[set]:
    """The module types thop has a counting rule for (its parameters are counted only for those), or None."""
    try:
        with warnings.catch_warnings():  # thop's import warns about distutils' LooseVersion
            warnings.simplefilter('ignore', DeprecationWarning)
            return set(importlib.import_module('thop.profile').register_hooks)
    except (ImportError, AttributeError):
        return None


def param_breakdown(model: nn.Module, size: int = 224) -> Dict[str, object]:
    """Every parameter of ``model`` by how a hook-based counter such as thop sees it, from one forward at ``size``.

    Categories: held directly by a module that has children (a hook counter sums only leaf modules); held by a leaf
    module whose forward never runs (its weight is used directly, so its hook never fires); held by a leaf module that
    runs but has no thop rule; and the rest, which is what thop counts. Each category is itemised by
    ``<holder class>.<parameter>`` (or the leaf module's attribute name).
    """
    ran = set()
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(lambda mod, inp, out: ran.add(id(mod))) for m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    thop_types = _thop_types()
    totals: Dict[str, int] = {}
    items: Dict[str, Dict[str, int]] = {}
    for mname, m in model.named_modules():
        own = list(m.named_parameters(recurse=False))
        if not own:
            continue
        if next(m.children(), None) is not None:
            cat, label = 'held directly by a non-leaf module', type(m).__name__ + '.{}'
        elif id(m) not in ran:
            cat, label = 'held by a leaf module whose forward never runs', mname.rsplit('.', 1)[-1] + '.{}'
        elif thop_types is not None and type(m) not in thop_types:
            cat, label = 'held by a leaf module with no thop rule', type(m).__name__ + '.{}'
        else:
            cat, label = 'held by leaf modules that run (what thop counts)', None
        for n, p in own:
            totals[cat] = totals.get(cat, 0) + p.numel()
            if label:
                key = label.format(n)
                items.setdefault(cat, {})[key] = items.setdefault(cat, {}).get(key, 0) + p.numel()
    return {'every parameter': sum(p.numel() for p in model.parameters()), 'by category': totals, 'items': items}


def fvcore_breakdown(model: nn.Module, size: int = 224) -> Dict[str, object]:
    """FLOPs (multiply-adds) by gmamba_zoo's fvcore counter, by operator, with matmuls split by the module holding
    them (attention vs. Mamba projections used through their weights)."""
    from gmamba_zoo.flops.counter import ZooFlopCountAnalysis
    model = copy.deepcopy(model).eval()
    analysis = ZooFlopCountAnalysis(model, (torch.randn(1, 3, size, size),))
    with torch.no_grad():
        total = analysis.total()
    by_op = {k: int(v) for k, v in sorted(analysis.by_operator().items())}
    split: Dict[str, int] = {}
    for name, ops in analysis.fca.by_module_and_operator().items():
        if 'matmul' not in ops:
            continue
        leaf = name.rsplit('.', 1)[-1]
        if leaf in ('mhsa', 'mamba_block', 'mamba'):
            split[f'matmul in {leaf}'] = split.get(f'matmul in {leaf}', 0) + int(ops['matmul'])
    return {'total': int(total), 'by operator': by_op, 'matmul by module': split,
            'skipped (no handle)': analysis.skipped()}


def thop_available() -> bool:
    thop = sys.modules.get('thop')
    return not ((thop is None and _missing('thop')) or getattr(thop, 'STUB', False))


def thop_counts(model: nn.Module, size: int = 224) -> Dict[str, object]:
    """``thop.profile`` at ``size`` (what the released vGamba's main() runs): params, MACs (thop calls them FLOPs),
    and the MACs by module type."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        import thop
    model = copy.deepcopy(model).eval()
    macs, params, info = thop.profile(model, inputs=(torch.randn(1, 3, size, size),), verbose=False,
                                      ret_layer_info=True)
    by_type: Dict[str, int] = {}

    def walk(tree: Dict[str, tuple], prefix: str) -> None:
        for name, (ops, _, children) in tree.items():
            if children:
                walk(children, prefix + name + '.')
            elif ops:
                kind = type(model.get_submodule(prefix + name)).__name__
                by_type[kind] = by_type.get(kind, 0) + int(ops)
    walk(info, '')
    return {'params': int(params), 'MACs': int(macs), 'MACs by module type': by_type}


def count_report(mod: Optional[types.ModuleType], variants: Sequence[str], seed: int = 0,
                 use_thop: bool = True) -> Dict[str, object]:
    """Parameter and FLOP breakdowns at 224 x 224 for our vGamba (as shipped) and, given ``mod``, the released one."""
    out: Dict[str, object] = {}
    for v in variants:
        models = {}
        if mod is not None:
            torch.manual_seed(seed)
            models['released'] = build_released_vgamba(mod, v).eval()
        import timm
        torch.manual_seed(seed)
        models['ours'] = timm.create_model(f'vgamba_{v}').eval()
        for who, model in models.items():
            entry: Dict[str, object] = {'parameters': param_breakdown(model), 'fvcore': fvcore_breakdown(model)}
            if use_thop:
                entry['thop'] = thop_counts(model) if thop_available() else 'not installed (pip install thop)'
            out[f'vgamba_{v} {who}'] = entry
    return out


# ----------------------------------------------------------------------------------------------------------------------

def _fmt(value: object, indent: str = '  ') -> str:
    if isinstance(value, dict) and not value:
        return '{}'
    if isinstance(value, dict):
        return '\n'.join(f'{indent}{k}: ' + (('\n' + _fmt(v, indent + '  ')) if isinstance(v, dict) and v else _fmt(v))
                         for k, v in value.items())
    if isinstance(value, float):
        return f'{value:.4g}' if abs(value) < 1e4 else f'{value:,.0f}'
    return str(value)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--gmamba-dir', type=Path, default=os.environ.get('GMAMBA_OFFICIAL_DIR'),
                   help='checkout of github.com/Xinmu-Tantai/GMamba-GSSM (default: $GMAMBA_OFFICIAL_DIR)')
    p.add_argument('--vgamba-dir', type=Path, default=os.environ.get('VGAMBA_OFFICIAL_DIR'),
                   help='checkout of github.com/yunusa2k2/vGamba (default: $VGAMBA_OFFICIAL_DIR)')
    p.add_argument('--dim', type=int, default=32, help='GMamba block channels (default 32)')
    p.add_argument('--size', type=int, default=14, help='GMamba square map side (default 14: 2x2 released windows)')
    p.add_argument('--window-size', type=int, default=None,
                   help='also compare our GMambaBlock(window_size=N) with the released N x N windows')
    p.add_argument('--variants', nargs='+', choices=sorted(VARIANT_DEPTHS), default=['b'],
                   help='vGamba variants to compare and count (default b)')
    p.add_argument('--no-per-bug', action='store_true', help='vGamba: only the all-patched comparison')
    p.add_argument('--counts', action='store_true',
                   help='parameter and FLOP breakdowns (thop, fvcore, parameters by holder) of our vGamba, and of the '
                        'released one with --vgamba-dir (where they are on by default); needs no released code')
    p.add_argument('--no-counts', action='store_true', help='skip the breakdowns')
    p.add_argument('--no-thop', action='store_true', help='leave thop out of the breakdowns')
    p.add_argument('--stub-mamba-ssm', choices=['always', 'if-missing'], default='always',
                   help='replace mamba_ssm by the stub always (default: the comparisons run on CPU, where its '
                        'kernels cannot) or only when it is not installed')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tol', type=float, default=1e-5, help='pass threshold on the all-patched differences')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--json', type=Path, default=None, help='write the results here')
    args = p.parse_args(argv)
    if not args.gmamba_dir and not args.vgamba_dir and not args.counts:
        p.error('give --gmamba-dir and/or --vgamba-dir (or set GMAMBA_OFFICIAL_DIR / VGAMBA_OFFICIAL_DIR), or --counts')
    if args.threads:
        torch.set_num_threads(args.threads)
    stubs = install_stubs(True if args.stub_mamba_ssm == 'always' else None)
    results: Dict[str, object] = {'command': ' '.join(['python scripts/compare_official.py'] + list(
        argv if argv is not None else sys.argv[1:])), 'stubs': stubs, 'torch': torch.__version__}
    ok = True
    if args.gmamba_dir:
        t = time.perf_counter()
        mod = load_released_gmamba(args.gmamba_dir)
        res = compare_gmamba(mod, args.dim, args.size, seed=args.seed)
        if args.window_size:
            res.update(compare_gmamba(mod, args.dim, args.size, seed=args.seed, window_size=args.window_size))
        res['bugs'] = GMAMBA_BUGS
        res['seconds'] = round(time.perf_counter() - t, 1)
        ok &= res['all bugs patched'] <= args.tol
        results['gmamba_block'] = res
        print('GMamba block, ours vs released (max |difference| of the block output, float32):')
        print(_fmt({k: v for k, v in res.items() if k != 'bugs'}), flush=True)
    if args.vgamba_dir:
        mod = load_released_vgamba(args.vgamba_dir)
        t = time.perf_counter()
        res = compare_gamba_block(mod, seed=args.seed)
        res['seconds'] = round(time.perf_counter() - t, 1)
        ok &= res['all bugs patched'] <= args.tol
        results['gamba_block'] = res
        print('Gamba block (p = 256 at 14 x 14, as in stage 3), ours vs released (max |difference|, float32):')
        print(_fmt(res), flush=True)
        for v in args.variants:
            t = time.perf_counter()
            res = compare_vgamba(mod, v, seed=args.seed, per_bug=not args.no_per_bug)
            res['seconds'] = round(time.perf_counter() - t, 1)
            ok &= res['all bugs patched'] <= args.tol
            results[f'vgamba_{v}'] = res
            print(f'vGamba-{v.upper()}, ours vs released (max |difference| of the logits, float32):')
            print(_fmt(res), flush=True)
        results['vgamba_bugs'], results['vgamba_notes'] = VGAMBA_BUGS, VGAMBA_NOTES
    if args.counts or (args.vgamba_dir and not args.no_counts):
        t = time.perf_counter()
        mod = load_released_vgamba(args.vgamba_dir) if args.vgamba_dir else None
        counts = count_report(mod, args.variants, args.seed, use_thop=not args.no_thop)
        results['counts'] = counts
        print(f'Parameters and FLOPs at 224 x 224, batch 1 ({time.perf_counter() - t:.0f} s):')
        print(_fmt(counts), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f'wrote {args.json}')
    if args.gmamba_dir or args.vgamba_dir:
        print('PASS' if ok else 'FAIL', f'(all-patched differences within {args.tol:g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
