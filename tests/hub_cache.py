"""Write files into a Hugging Face Hub cache in the Hub's own layout, so offline loading finds them.

Layout (huggingface_hub's): ``models--{org}--{name}/refs/{revision}`` holds a commit hash, and
``models--{org}--{name}/snapshots/{commit}/{filename}`` holds each file.
"""
import hashlib
import os
import shutil
from pathlib import Path
from typing import Dict, Union


def put_in_hub_cache(repo_id: str, files: Dict[str, Union[str, Path, bytes]], revision: str = 'main') -> Path:
    """Place ``files`` (name -> source path or bytes) in the cache for ``repo_id``; returns the snapshot folder."""
    cache = Path(os.environ['HF_HUB_CACHE'])
    repo_dir = cache / ('models--' + repo_id.replace('/', '--'))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / 'snapshots' / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs').mkdir(exist_ok=True)
    (repo_dir / 'refs' / revision).write_text(commit)
    for name, src in files.items():
        dst = snapshot / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copyfile(src, dst)
    return snapshot
