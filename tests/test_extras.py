"""A plain install (no extras): every command and function that needs an optional package fails before it starts
working, with one line naming the extra to install. A missing package is simulated by a ``None`` entry in
``sys.modules`` (what ``import`` then refuses), so these run where the extras are installed too."""
import sys

import pytest

tomllib = pytest.importorskip('tomllib')

from pathlib import Path  # noqa: E402

from gmamba_zoo.cli import main as cli_main  # noqa: E402
from gmamba_zoo.compat.extras import EXTRAS, MissingExtraError, require_extra  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = {'segmentation_models_pytorch': 'segmentation-models-pytorch'}  # where the import name differs


def _hide(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line(message: str, extra: str) -> None:
    assert '\n' not in message and f"pip install 'gmamba-zoo[{extra}]'" in message and f'[{extra}] extra' in message


def test_every_extra_is_pyprojects():
    """The table the helper reads and pyproject's optional-dependencies list the same packages."""
    declared = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
    for extra, modules in EXTRAS.items():
        names = {d.split('>')[0].split('=')[0].split('<')[0].strip().lower() for d in declared[extra]}
        assert {DISTRIBUTION.get(m, m) for m in modules} == names, extra


@pytest.mark.parametrize('extra', sorted(EXTRAS))
def test_missing_module_names_the_extra(monkeypatch, extra):
    module = EXTRAS[extra][-1]
    _hide(monkeypatch, module)
    with pytest.raises(MissingExtraError) as err:
        require_extra(extra, 'this thing')
    assert isinstance(err.value, ImportError) and err.value.args[0].startswith('this thing needs the ')
    _one_line(str(err.value), extra)
    assert f'{module} is not installed' in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        require_extra(extra, 'gmamba-zoo x', command=True)
    _one_line(str(exit_.value.code), extra)


def test_installed_but_broken_module_is_not_called_missing(monkeypatch, tmp_path):
    (tmp_path / 'gmz_broken_mod.py').write_text('import gmz_no_such_dependency\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRAS, 'viz', ('gmz_broken_mod',))
    with pytest.raises(MissingExtraError, match=r'installed but broken \(gmz_broken_mod does not import: .*'
                                                r'gmz_no_such_dependency.*--force-reinstall'):
        require_extra('viz', 'plotting')


def test_export_command_fails_before_building(monkeypatch, tmp_path):
    import gmamba_zoo.export.onnx as onnx_mod
    monkeypatch.setattr(onnx_mod, 'build_model', lambda *a, **k: pytest.fail('built a model without onnxscript'))
    _hide(monkeypatch, 'onnxscript')
    with pytest.raises(SystemExit) as exit_:
        cli_main(['export', 'resnet18_gmamba', '--out', str(tmp_path / 'm.onnx')])
    _one_line(str(exit_.value.code), 'onnx')
    assert 'gmamba-zoo export' in str(exit_.value.code) and 'onnxscript' in str(exit_.value.code)
    # --no-check needs no onnxruntime; the check does
    monkeypatch.delitem(sys.modules, 'onnxscript')
    _hide(monkeypatch, 'onnxruntime')
    with pytest.raises(SystemExit, match='onnxruntime is not installed'):
        cli_main(['export', 'resnet18_gmamba', '--out', str(tmp_path / 'm.onnx')])
    with pytest.raises(MissingExtraError, match=r'export_onnx needs the \[onnx\] extra'):
        onnx_mod.export_onnx('resnet18_gmamba', tmp_path / 'm.onnx')
    with pytest.raises(MissingExtraError, match=r'\[onnx\] extra'):
        onnx_mod.onnx_session(tmp_path / 'm.onnx')


def test_export_help_names_the_extra(capsys):
    with pytest.raises(SystemExit):
        cli_main(['export', '--help'])
    assert 'gmamba-zoo[onnx]' in capsys.readouterr().out


def test_plotting_commands_fail_before_working(monkeypatch, tmp_path):
    import gmamba_zoo.analysis.longrange as longrange
    import gmamba_zoo.analysis.perception as perception
    monkeypatch.setattr(perception, 'erf_models', lambda *a, **k: pytest.fail('started without matplotlib'))
    monkeypatch.setattr(longrange, 'run_benchmark', lambda *a, **k: pytest.fail('trained without matplotlib'))
    _hide(monkeypatch, 'matplotlib', 'matplotlib.pyplot')
    for argv in (['erf', 'resnet18_gmamba', '--out', str(tmp_path)], ['longrange', '--out', str(tmp_path / 'x.json')]):
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        _one_line(str(exit_.value.code), 'viz')
    with pytest.raises(MissingExtraError, match=r'\[viz\] extra'):
        perception.require_matplotlib()


def test_integrations_fail_naming_the_extra(monkeypatch):
    from gmamba_zoo.integrations import detection
    _hide(monkeypatch, 'torchvision', 'torchvision.ops', 'torchvision.ops.feature_pyramid_network',
          'torchvision.models', 'torchvision.models.detection')
    for call in (lambda: detection.detection_backbone('resnet18_gmamba'),
                 lambda: detection.build_detector('faster_rcnn', 'resnet18_gmamba', 2)):
        with pytest.raises(MissingExtraError) as err:
            call()
        _one_line(str(err.value), 'detection')
    _hide(monkeypatch, 'mmengine', 'mmengine.model', 'mmengine.registry')
    monkeypatch.delitem(sys.modules, 'gmamba_zoo.integrations.openmmlab', raising=False)
    with pytest.raises(MissingExtraError) as err:
        import gmamba_zoo.integrations.openmmlab  # noqa: F401
    _one_line(str(err.value), 'openmmlab')
