"""Checkpoints saved by earlier code load into today's: block weights, block outputs, every model's keys and shapes.

The fixtures in ``tests/data/`` were written by the code before the SSM mixers were refactored onto one core
(``state_dict_compat.json`` names the commit): three small blocks with every parameter moved off its init (so each
one shows in the output), their state dicts, fixed inputs with the outputs they gave, and the state-dict key names
and shapes of every registered model (gzipped JSON). Never regenerate them to make this test pass: a failure here
means old checkpoints no longer load, or load and compute something else.
"""
import gzip
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import gmamba_zoo
from gmamba_zoo.layers import GambaBlock, GMambaBlock

pytestmark = pytest.mark.usefixtures('one_thread')

DATA = Path(__file__).parent / 'data'
META = json.loads((DATA / 'state_dict_compat.json').read_text())
CLASSES = {'GMambaBlock': GMambaBlock, 'GambaBlock': GambaBlock}


@pytest.mark.parametrize('name', sorted(META['blocks']))
def test_saved_block_loads_strictly_and_gives_saved_outputs(name):
    spec = META['blocks'][name]
    torch.manual_seed(spec['seed'] + 100)  # another init than the saved one, so the load has to do the work
    block = CLASSES[spec['class']](**spec['kwargs']).eval()
    state = load_file(DATA / f'compat_{name}.safetensors')
    want = {k: tuple(v.shape) for k, v in state.items()}
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == want
    block.load_state_dict(state, strict=True)
    io = load_file(DATA / f'compat_{name}_io.safetensors')
    assert len(io) >= 4
    with torch.no_grad():
        for i in range(len(io) // 2):
            torch.testing.assert_close(block(io[f'input{i}']), io[f'output{i}'], rtol=0, atol=1e-6)


def _build_keys_and_shapes(name: str) -> dict:
    try:
        with torch.device('meta'):  # no memory, no init work
            model = timm.create_model(name)
    except NotImplementedError:  # a model that reads a tensor's value while it is built (vGamba's drop-path rates)
        model = timm.create_model(name)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


with gzip.open(DATA / META['models_file'], 'rt') as _f:
    MODELS = json.load(_f)


def test_every_registered_model_has_a_fixture():
    assert sorted(MODELS) == sorted(gmamba_zoo.list_models())


@pytest.mark.parametrize('name', sorted(MODELS))
def test_model_state_dict_keys_and_shapes_unchanged(name):
    got, want = _build_keys_and_shapes(name), MODELS[name]
    assert sorted(got.keys() - want.keys()) == [] and sorted(want.keys() - got.keys()) == []
    assert [k for k in want if got[k] != want[k]] == []
    assert list(got) == list(want)  # same order too (optimizer state and param groups follow it)
