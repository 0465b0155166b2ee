"""The attack command's refusals, and the stopwords it needs found even in a group-writable install."""

from __future__ import annotations

import pytest

from lookalike.attack import NLTK_DATA, run_attack
from lookalike.errors import InputError, ModelError
from lookalike.params import AttackParams


def test_attack_bad_inputs(tiny_models, tiny_exports, shared_data, tmp_path):
    with pytest.raises(ModelError, match="needs 'text-classification'"):
        run_attack(tiny_exports["bert2"], shared_data / "imdb" / "imdb_1k.tsv", tmp_path / "a", AttackParams(mlm="x"))
    bad = tmp_path / "bad.tsv"
    bad.write_text("a fine film\t7\n")
    with pytest.raises(InputError, match="label 7 is not one of the model's labels"):
        run_attack(tiny_exports["cls"], bad, tmp_path / "b", AttackParams(mlm=str(tiny_models["mlm"])))


def test_a_group_writable_install_still_finds_the_stopwords(tmp_path):
    """NLTK refuses a data root other accounts can write to (a umask-002 install, an unpacked archive) and says the
    resource is missing; lookalike then reads a private copy of its stopwords from its cache."""
    import shutil
    import subprocess
    import sys

    shared = tmp_path / "install" / "nltk_data"
    shutil.copytree(NLTK_DATA, shared)
    for p in (shared, *shared.rglob("*")):
        p.chmod(0o775 if p.is_dir() else 0o664)
    code = ("import sys, lookalike.attack as a; from pathlib import Path; a.NLTK_DATA = Path(sys.argv[1]); "
            "a._prepare_textattack(); from nltk.corpus import stopwords; print(len(stopwords.words('english')), "
            "a.nltk_root())")
    env = {**__import__("os").environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(shared)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    n, root = r.stdout.split()
    assert int(n) == len((NLTK_DATA / "corpora" / "stopwords" / "english").read_text().split())
    assert root.startswith(str(tmp_path / "cache")) and (shared / "corpora").stat().st_mode & 0o020  # install kept
