"""The gmamba-zoo command line."""
import json

import pytest

import gmamba_zoo
from gmamba_zoo.cli import main
from gmamba_zoo.ops import resolve_scan_backend


def test_list(capsys):
    assert main(['list', '--json']) == 0
    names = json.loads(capsys.readouterr().out)
    assert names == gmamba_zoo.list_models() and len(names) > 0


def test_info(capsys):
    name = gmamba_zoo.list_models()[0]
    assert main(['info', name, '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['name'] == name and info['params_m'] > 0
    assert len(info['feature_channels']) == len(info['feature_strides']) > 0
    assert info['scan_backend_cpu'] == resolve_scan_backend('cpu')  # the backend that runs: numba when it imports
    assert main(['info', name]) == 0
    assert 'feature strides' in capsys.readouterr().out


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown model 'resnet_nope'"):
        main(['info', 'resnet_nope'])
