"""Publishing and loading: Hub folders, offline ``hf-hub:`` loads, local loads, checkpoints, model cards, torch.hub.

Every registered model is exported at its default configuration (parameters perturbed, so the state-space blocks are
not the identity and every tensor matters), placed in the offline Hub cache of ``conftest.py`` and loaded back through
timm's real ``hf-hub:`` code with ``HF_HUB_OFFLINE=1``; tensors and outputs at 64x64 must be identical. Nothing here
reaches the network: uploads go to a fake ``HfApi``.
"""
import dataclasses
import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
import timm

import gmamba_zoo
from gmamba_zoo import hub
from gmamba_zoo.hub.card import _flops_fn
from gmamba_zoo.cli import main as cli_main
from gmamba_zoo.models.variants import ZOO_VARIANTS
from hub_cache import put_in_hub_cache

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = gmamba_zoo.list_models()
# the small model the single-model tests use
SMALL = 'resnet18_gmamba' if 'resnet18_gmamba' in MODELS else (MODELS[0] if MODELS else None)
ORG = 'gmamba-zoo-test'
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

pytestmark = [pytest.mark.skipif(not MODELS, reason='no zoo model is registered'),
              pytest.mark.usefixtures('one_thread')]


def _perturbed(name: str, **kwargs) -> torch.nn.Module:
    """``name`` at its default config with every parameter moved off its initial value (blocks no longer identity)."""
    model = timm.create_model(name, **kwargs).eval()
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:5]
    with torch.no_grad():
        ya, yb = a.eval()(X), b.eval()(X)
    assert torch.isfinite(ya).all() and torch.equal(ya, yb)


@pytest.fixture(scope='module')
def small_export(tmp_path_factory):
    """SMALL, perturbed, exported to a folder: (model, folder)."""
    model = _perturbed(SMALL)
    folder = hub.export_for_hub(model, tmp_path_factory.mktemp('export') / SMALL, hub.WeightsSource('init'))
    return model, folder


# ----------------------------------------------------------------------------------------------------------------------
# every registered model: export, offline Hub cache, hf-hub: load

@pytest.mark.parametrize('name', [n if n in ('resnet18_gmamba', 'vgamba_b') else
                                  pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def test_every_model_round_trips_through_the_offline_hub(name, monkeypatch):
    model = _perturbed(name)
    repo_id = f'{ORG}/{name}'
    snapshot = put_in_hub_cache(repo_id, {})  # export straight into the cache's snapshot folder
    hub.export_for_hub(model, snapshot, hub.WeightsSource('init'), repo_id=repo_id)
    assert sorted(p.name for p in snapshot.iterdir()) == ['README.md', 'config.json', 'model.safetensors']

    config = json.loads((snapshot / 'config.json').read_text())
    assert config['architecture'] == name and config['num_classes'] == model.num_classes
    assert config['num_features'] == model.num_features and config['pretrained_cfg']['tag'] == 'untrained'
    assert config['pretrained_cfg']['description'] == hub.WeightsSource('init').statement(hub.model_family(name))

    def no_unpickling(*args, **kwargs):
        raise AssertionError('torch.load called: the Hub folder must load through safetensors only')

    monkeypatch.setattr(torch, 'load', no_unpickling)
    loaded = timm.create_model(f'hf-hub:{repo_id}', pretrained=True)
    assert loaded.pretrained_cfg['hf_hub_id'] == repo_id
    _assert_same(model, loaded)
    shutil.rmtree(snapshot.parents[1])  # the larger models' files add up to gigabytes


# ----------------------------------------------------------------------------------------------------------------------
# local loads

def test_local_dir_and_local_file_load(small_export):
    model, folder = small_export
    _assert_same(model, timm.create_model(f'local-dir:{folder}', pretrained=True))
    by_file = timm.create_model(SMALL, pretrained=True,
                                pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))
    _assert_same(model, by_file)
    hub.verify_export(folder, model)


def test_args_json_cannot_hold_need_a_replacement(tmp_path):
    """config.json must rebuild the model: an arg JSON cannot hold is refused unless model_args replaces it."""
    model = timm.create_model(SMALL, act_layer=torch.nn.ReLU, num_classes=5).eval()
    with pytest.raises(ValueError, match=r"args \['act_layer'\] that JSON cannot hold"):
        hub.export_for_hub(model, tmp_path / 'refused', hub.WeightsSource('init'))
    assert not (tmp_path / 'refused').exists()
    folder = hub.export_for_hub(model, tmp_path / 'ok', hub.WeightsSource('init'), model_args={'act_layer': 'relu'})
    config = json.loads((folder / 'config.json').read_text())
    assert config['model_args'] == {'act_layer': 'relu'}  # num_classes is config.json's own field
    assert model._model_args['act_layer'] is torch.nn.ReLU  # the model itself is left as it was
    assert '`{"act_layer": "relu", "num_classes": 5}`' in (folder / 'README.md').read_text()
    hub.verify_export(folder, model)


def test_features_only_from_the_hub(small_export):
    model, folder = small_export
    repo_id = f'{ORG}/{SMALL}-features'
    put_in_hub_cache(repo_id, {p.name: p for p in folder.iterdir()})
    backbone = timm.create_model(f'hf-hub:{repo_id}', pretrained=True, features_only=True).eval()
    info = model.feature_info
    info = info.get_dicts() if hasattr(info, 'get_dicts') else info
    assert backbone.feature_info.channels() == [f['num_chs'] for f in info]
    with torch.no_grad():
        feats = backbone(X)
        ref = timm.create_model(f'local-dir:{folder}', pretrained=True, features_only=True).eval()(X)
    assert all(torch.equal(a, b) for a, b in zip(feats, ref))


# ----------------------------------------------------------------------------------------------------------------------
# training checkpoints

def test_checkpoint_formats(small_export, tmp_path):
    model, _ = small_export
    sd = model.state_dict()
    torch.save({'epoch': 3, 'arch': SMALL, 'state_dict': sd, 'optimizer': {'lr': 0.1}}, tmp_path / 'train.pth.tar')
    torch.save({'module.' + k: v for k, v in sd.items()}, tmp_path / 'ddp.pth')
    zeros = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({'state_dict': zeros, 'state_dict_ema': sd}, tmp_path / 'ema.pth')
    import safetensors.torch
    safetensors.torch.save_file(sd, str(tmp_path / 'w.safetensors'))
    loaded, weights = hub.build_model(SMALL, checkpoint=tmp_path / 'train.pth.tar', blocks_trained=True)
    _assert_same(model, loaded)
    assert weights.kind == 'checkpoint' and weights.blocks_trained and '`train.pth.tar`, SHA-256 `' in weights.detail
    for name, kwargs in [('ddp.pth', {}), ('ema.pth', dict(use_ema=True)), ('w.safetensors', {})]:
        got = hub.read_checkpoint(tmp_path / name, **kwargs)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd), name
    assert all(torch.equal(v, zeros[k]) for k, v in hub.read_checkpoint(tmp_path / 'ema.pth').items())
    with pytest.raises(ValueError, match='no "state_dict_ema"'):
        hub.read_checkpoint(tmp_path / 'train.pth.tar', use_ema=True)


class _Pickled:
    pass


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    torch.save({'state_dict': {}, 'args': _Pickled()}, tmp_path / 'evil.pth')
    with pytest.raises(hub.CheckpointRefusedError, match=r'evil.pth: refused: it holds pickled Python objects, e.g. '
                       r'\S*_Pickled;'):
        hub.read_checkpoint(tmp_path / 'evil.pth')
    (tmp_path / 'w.npz').write_bytes(b'')
    with pytest.raises(ValueError, match='unknown checkpoint type'):
        hub.read_checkpoint(tmp_path / 'w.npz')
    with pytest.raises(FileNotFoundError):
        hub.read_checkpoint(tmp_path / 'missing.pth')


def test_checkpoint_of_another_model_names_the_keys(small_export, tmp_path):
    model, _ = small_export
    sd = dict(model.state_dict())
    dropped = sorted(sd)[:3]
    other = {k: v for k, v in sd.items() if k not in dropped}
    other['other_net.proj.weight'] = torch.zeros(4, 4)
    torch.save(other, tmp_path / 'other.pth')
    with pytest.raises(hub.CheckpointMismatchError) as e:
        hub.build_model(SMALL, checkpoint=tmp_path / 'other.pth')
    msg = str(e.value)
    assert 'Missing keys (3)' in msg and all(k in msg for k in dropped)
    assert 'Unexpected keys (1): other_net.proj.weight' in msg

    # a fine-tuned head: only the classifier differs, and the error says which num_classes to build
    small, _ = hub.build_model(SMALL, num_classes=7)
    torch.save(small.state_dict(), tmp_path / 'head7.pth')
    with pytest.raises(hub.CheckpointMismatchError, match='num_classes=7'):
        hub.build_model(SMALL, checkpoint=tmp_path / 'head7.pth')
    loaded, _ = hub.build_model(SMALL, checkpoint=tmp_path / 'head7.pth', num_classes=7)
    assert loaded.num_classes == 7


# ----------------------------------------------------------------------------------------------------------------------
# model cards

def test_card_numbers_come_from_the_model(small_export):
    model, folder = small_export
    card = (folder / 'README.md').read_text()
    facts = hub.model_facts(model)
    assert f"{facts['params']:,}" in card and str(facts['feature_channels']) in card
    assert str(facts['feature_strides']) in card
    assert f"| Final features (`num_features`) | {model.num_features} |" in card
    assert hub.GMAMBA_PAPER in card and hub.VGAMBA_PAPER in card and card.count('```bibtex') == 2
    assert all(f'```bibtex\n{c}\n```' in card for c in hub.CITATIONS.values())
    assert 'Accuracy:** none claimed' in card and 'top-1' not in card.lower()
    assert f"timm.create_model('hf-hub:your-org/{SMALL}', pretrained=True)" in card
    assert f"torch.hub.load('{hub.DEFAULT_GITHUB_REPO}', '{SMALL}'" in card and 'features_only=True' in card
    assert card.startswith('---\ntags:\n') and '\nlibrary_name: timm\n' in card and '\nlicense: ' in card


def test_card_follows_the_registry(monkeypatch):
    """Change what the registry builds and the card changes with it."""
    model, weights = hub.build_model(SMALL)
    before = hub.model_card(hub.model_facts(model), weights)
    if ZOO_VARIANTS[SMALL].is_gmamba:
        monkeypatch.setitem(ZOO_VARIANTS, SMALL, dataclasses.replace(ZOO_VARIANTS[SMALL], depths=(1, 0, 0, 0)))
        changed, _ = hub.build_model(SMALL)
    else:
        changed, _ = hub.build_model(SMALL, num_classes=10)
    n_before, n_after = (sum(p.numel() for p in m.parameters()) for m in (model, changed))
    assert n_before != n_after
    after = hub.model_card(hub.model_facts(changed), weights)
    assert f'{n_before:,}' in before and f'{n_after:,}' in after and f'{n_before:,}' not in after
    flops_card = hub.model_card(hub.model_facts(changed, (3, 64, 64)), weights)
    if _flops_fn() is not None:
        assert 'FLOPs at 3x64x64 |' in flops_card
    else:
        assert 'FLOPs | not counted' in flops_card


def test_card_states_where_the_weights_came_from(hub_cache):
    family = hub.model_family(SMALL)
    assert 'untrained' in hub.WeightsSource('init').statement(family).lower()
    trained = hub.WeightsSource('checkpoint', '`ft.pth`', blocks_trained=True).statement(family)
    assert 'A user checkpoint: `ft.pth`' in trained and 'trained: yes' in trained
    assert 'trained: no' in hub.WeightsSource('checkpoint', '`ft.pth`').statement(family)
    with pytest.raises(ValueError, match='needs a training checkpoint'):
        hub.WeightsSource('pretrained', blocks_trained=True)


@pytest.mark.skipif('resnet18_gmamba' not in MODELS, reason='needs resnet18_gmamba')
def test_pretrained_gmamba_card_says_backbone_only():
    """--pretrained: timm's plain backbone weights (a stand-in in the offline cache) with identity GMamba blocks."""
    plain = timm.create_model('resnet18')
    hub_id = timm.models.get_pretrained_cfg('resnet18_gmamba').hf_hub_id
    import safetensors.torch
    put_in_hub_cache(hub_id, {'model.safetensors': safetensors.torch.save(plain.state_dict())})
    model, weights = hub.build_model('resnet18_gmamba', pretrained=True)
    statement = weights.statement(hub.model_family('resnet18_gmamba'))
    assert statement.startswith("timm's ImageNet weights for the plain backbone") and hub_id in statement
    assert 'the GMamba blocks are untrained (identity' in statement
    with torch.no_grad():
        assert torch.equal(model.eval()(X), plain.eval()(X))


# ----------------------------------------------------------------------------------------------------------------------
# command line and upload

class _FakeHfApi:
    calls = []

    def __init__(self, token=None, **kwargs):
        self.calls.append(('init', token, kwargs))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs))
        return type('RepoUrl', (), {'repo_id': repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        self.calls.append(('upload_folder', repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return type('CommitInfo', (), {'commit_url': f'https://huggingface.co/{repo_id}/commit/0'})()


def test_cli_dry_run_and_upload(small_export, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    model, _ = small_export
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'ckpt.pth')
    monkeypatch.setattr(huggingface_hub, 'HfApi', _FakeHfApi)
    _FakeHfApi.calls = []
    args = ['push-to-hub', SMALL, '--checkpoint', str(tmp_path / 'ckpt.pth'), '--blocks-trained', '--no-flops',
            '--repo-id', f'{ORG}/ft', '--notes', 'fine-tuned for 3 epochs on a toy set']
    assert cli_main(args + ['--out', str(tmp_path / 'dry'), '--dry-run']) == 0
    assert _FakeHfApi.calls == [] and 'verified' in capsys.readouterr().out
    card = (tmp_path / 'dry' / 'README.md').read_text()
    assert 'A user checkpoint: `ckpt.pth`' in card and 'trained:** yes' in card and 'toy set' in card
    assert f"'hf-hub:{ORG}/ft'" in card
    config = json.loads((tmp_path / 'dry' / 'config.json').read_text())
    assert config['pretrained_cfg']['tag'] == 'checkpoint_blocks_trained'
    assert 'trained: yes' in config['pretrained_cfg']['description']

    assert cli_main(args + ['--out', str(tmp_path / 'up'), '--no-verify']) == 0
    assert [c[0] for c in _FakeHfApi.calls] == ['init', 'create_repo', 'upload_folder']
    assert _FakeHfApi.calls[0][1] is None  # the token comes from huggingface_hub's own login / HF_TOKEN
    assert _FakeHfApi.calls[2][1:] == (f'{ORG}/ft', ['README.md', 'config.json', 'model.safetensors'])

    with pytest.raises(SystemExit, match='is not empty'):
        cli_main(args + ['--out', str(tmp_path / 'up'), '--dry-run'])
    with pytest.raises(SystemExit, match='--blocks-trained needs --checkpoint'):
        cli_main(['push-to-hub', SMALL, '--blocks-trained', '--out', str(tmp_path / 'x')])
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        cli_main(['push-to-hub', 'nope', '--out', str(tmp_path / 'y')])


def test_script_is_the_same_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['push_to_hub.py', '--help'])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO_ROOT / 'scripts' / 'push_to_hub.py'), run_name='__main__')
    assert e.value.code == 0 and '--repo-id' in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------------
# torch.hub

def test_torch_hub_lists_exactly_the_registry(monkeypatch):
    monkeypatch.setattr(torch.hub, '_get_cache_or_reload', lambda *args, **kwargs: str(REPO_ROOT))
    assert torch.hub.list('owner/gmamba_zoo') == MODELS
    hubconf = torch.hub._import_module('hubconf', str(REPO_ROOT / 'hubconf.py'))
    for name in MODELS:
        doc = getattr(hubconf, name).__doc__
        summary = timm.models.model_entrypoint(name).__doc__.strip().split('\n')[0]
        assert doc.startswith(summary) and 'pretrained:' in doc and 'features_only' in doc


def test_torch_hub_local_load(small_export):
    model, folder = small_export
    fresh = torch.hub.load(str(REPO_ROOT), SMALL, source='local', pretrained=False)
    assert fresh.pretrained_cfg['architecture'] == SMALL and fresh.num_classes == model.num_classes
    backbone = torch.hub.load(str(REPO_ROOT), SMALL, source='local', pretrained=False, features_only=True,
                              out_indices=(1, 2))
    assert len(backbone.feature_info.channels()) == 2
    # pretrained passes through: the exported weights through timm's file overlay
    loaded = torch.hub.load(str(REPO_ROOT), SMALL, source='local', pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))
    _assert_same(model, loaded)


def test_citations_are_the_same_everywhere():
    """The BibTeX in the README is the model files' (hub.card.CITATIONS reads them), line for line."""
    import inspect
    from pathlib import Path
    from gmamba_zoo.hub.card import CITATIONS
    from gmamba_zoo.models import gmamba as gm, vgamba as vg
    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    squash = lambda text: [line.strip() for line in text.strip().splitlines()]
    for key, module in (('gmamba', gm), ('vgamba', vg)):
        entry = '\n'.join(squash(CITATIONS[key]))
        assert entry in '\n'.join(squash(readme)), key
        assert entry in '\n'.join(squash(inspect.getdoc(module))), key
