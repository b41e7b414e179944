"""What the package needs of its dependencies, pinned: the timm lower bound in pyproject.toml is the first release
that has every timm API the package uses, and the private APIs it needs live in gmamba_zoo.compat only."""
import ast
import re
from pathlib import Path

import timm

ROOT = Path(__file__).resolve().parents[1]

# timm API -> the first timm release that has it as the package uses it (found from timm's history and wheels)
TIMM_NEEDS = {
    'timm.models.get_model_args': '1.0.31',  # and create_model recording the model args it is given
    'timm.models.save_for_hf': '1.0.16',
    'timm.layers.LayerScale': '1.0.22',  # earlier releases ignore init_values=0: inserted blocks would not be identity
    'timm.models.build_model_with_cfg': '0.9.0',
    'timm.models.generate_default_cfgs': '0.9.0',
    'timm.models.FeatureInfo': '0.9.0',
    'timm.layers.PatchEmbed': '0.9.0',
    'timm.layers.use_fused_attn': '0.9.0',
}


def _version(v: str):
    return tuple(int(x) for x in re.findall(r'\d+', v)[:3])


def _pyproject_timm_floor() -> str:
    text = (ROOT / 'pyproject.toml').read_text()
    return re.search(r'"timm>=([0-9.]+)', text).group(1)


def test_timm_floor_is_the_first_release_with_everything_used():
    assert _pyproject_timm_floor() == max(TIMM_NEEDS.values(), key=_version)


def test_installed_timm_has_what_the_package_uses():
    assert _version(timm.__version__) >= _version(_pyproject_timm_floor())
    for path in TIMM_NEEDS:
        module, name = path.rsplit('.', 1)
        assert hasattr(__import__(module, fromlist=[name]), name), path
    model = timm.create_model('resnet18', num_classes=3)
    assert timm.models.get_model_args(model)['num_classes'] == 3


def test_private_dependency_apis_only_in_compat():
    """No module but gmamba_zoo.compat imports a private timm/fvcore module or reads fvcore's private attributes."""
    offenders = []
    for path in (ROOT / 'gmamba_zoo').rglob('*.py'):
        if path.parent.name == 'compat':
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            if mod and mod.split('.')[0] in ('timm', 'fvcore') and any(p.startswith('_') for p in mod.split('.')):
                offenders.append(f'{path.relative_to(ROOT)}:{node.lineno} imports {mod}')
            if isinstance(node, ast.Attribute) and node.attr in ('_ignored_ops', '_op_handles', '_model_args'):
                offenders.append(f'{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}')
    assert not offenders, '\n'.join(offenders)
