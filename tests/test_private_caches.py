"""lmforge's caches live in its own folder, never in the shared temporary folder: jieba's marshalled
dictionary cache (which it loads without checks) included (issue 32)."""

import stat

import pytest

from lmforge._optional import require
from lmforge.paths import cache_root, private_dir


def test_private_dirs_are_under_the_cache_root_and_this_users_only(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    folder = private_dir("jieba")
    assert folder == tmp_path / "cache" / "jieba" and folder.is_dir()
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0


def test_jieba_keeps_its_cache_in_lmforges_folder(tmp_path, monkeypatch):
    jieba = pytest.importorskip("jieba")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jieba.dt, "tmp_dir", None)  # as a fresh import has it: the shared temp folder
    monkeypatch.setattr(jieba.dt, "initialized", False)
    assert require("jieba") is jieba
    assert jieba.dt.tmp_dir == str(tmp_path / "cache" / "jieba")
    assert jieba.lcut("今天天气不错") and (tmp_path / "cache" / "jieba" / "jieba.cache").is_file()
