"""`kuoro config import`: Annif's projects.cfg becomes a projects.toml that loads, with notes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kuoro.config.annif_import import import_annif_config
from kuoro.config.backends import BACKENDS
from kuoro.config.projects import SourceRef, load_projects
from kuoro.errors import ConfigError, NotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# A realistic Annif setup: the Finto AI style YSO projects, and one in another vocabulary.
PROJECTS_CFG = """\
# Annif projects for Finnish subject indexing
[yso-tfidf-fi]
name=TF-IDF Finnish
language=fi
backend=tfidf
analyzer=voikko(fi)
limit=100
vocab=yso(fi)

[yso-omikuji-bonsai-fi]
name=Omikuji Bonsai Finnish
language=fi
backend=omikuji
analyzer=snowball(finnish)
vocab=yso(fi)
cluster_balanced=False
cluster_k=100
max_depth=3
ngram=2
min_df=2

[yso-fasttext-fi]
name=fastText Finnish
language=fi
backend=fasttext
analyzer=snowball(finnish)
dim=500
lr=0.25
epoch=30
loss=hs
limit=50
chunksize=24
vocab=yso(fi)
wordNgrams=2
minCount=2

[yso-mllm-fi]
name=MLLM Finnish
language=fi
backend=mllm
analyzer=voikko(fi)
vocab=yso(fi)
min_samples=4

[yso-http-fi]
name=Finto AI
language=fi
backend=http
endpoint=https://ai.finto.fi/v1/projects/yso-fi/suggest
vocab=yso(fi)
access=hidden

[yso-ensemble-fi]
name=Ensemble Finnish
language=fi
backend=ensemble
sources=yso-tfidf-fi,yso-omikuji-bonsai-fi:2,yso-dummy-fi
vocab=yso(fi)

[yso-nn-fi]
name=NN ensemble Finnish
language=fi
backend=nn_ensemble
sources=yso-tfidf-fi:0.5,yso-omikuji-bonsai-fi,yso-mllm-fi:2,yso-ensemble-fi,stw-tfidf-en
vocab=yso(fi)
nodes=100
dropout_rate=0.2
epochs=10
lr=0.001
learn-epochs=1
lmdb_map_size=1073741824
access=private

[yso-pav-fi]
language=fi
backend=pav
sources=yso-tfidf-fi,yso-http-fi
vocab=yso(fi)
min-docs=10

[yso-dummy-fi]
language=fi
backend=dummy
vocab=yso(fi)

[stw-tfidf-en]
language=en
backend=tfidf
vocab=stw
analyzer=snowball(english)
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# The converted text, its notes, and the text parsed back as TOML.
Imported = tuple[str, list[str], dict[str, dict[str, object]]]


@pytest.fixture
def imported(tmp_path: Path) -> Imported:
    result = import_annif_config(write(tmp_path / "projects.cfg", PROJECTS_CFG))
    return result.toml_text, result.notes, tomllib.loads(result.toml_text)


def test_backends_and_keys_are_mapped(imported: Imported) -> None:
    _, _, tables = imported
    assert list(tables) == [
        "yso-tfidf-fi",
        "yso-omikuji-bonsai-fi",
        "yso-fasttext-fi",
        "yso-mllm-fi",
        "yso-http-fi",
        "yso-ensemble-fi",
        "yso-nn-fi",
        "yso-pav-fi",
        "stw-tfidf-en",
    ]
    assert tables["yso-tfidf-fi"] == {
        "name": "TF-IDF Finnish",
        "language": "fi",
        "vocab": "yso",
        "backend": "tfidf",
        "analyzer": "simplemma(fi)",
        "limit": 100,
    }
    assert tables["yso-omikuji-bonsai-fi"] | {"name": ""} == {
        "name": "",
        "language": "fi",
        "vocab": "yso",
        "backend": "omikuji",
        "analyzer": "snowball(finnish)",
        "cluster_balanced": False,
        "cluster_k": 100,
        "max_depth": 3,
        "ngram_max": 2,
        "min_df": 2,
    }
    fasttext = tables["yso-fasttext-fi"]
    assert {k: fasttext[k] for k in ("dim", "lr", "epoch", "loss", "word_ngrams", "min_count")} == {
        "dim": 500,
        "lr": 0.25,
        "epoch": 30,
        "loss": "hs",
        "word_ngrams": 2,
        "min_count": 2,
    }
    assert "chunksize" not in fasttext and fasttext["limit"] == 50
    assert fasttext["chunk_size"] == 24, "Annif's chunksize is Kuoro's chunk_size"
    assert tables["yso-mllm-fi"]["backend"] == "lexical"
    assert "min_samples" not in tables["yso-mllm-fi"]
    http = tables["yso-http-fi"]
    assert (http["backend"], http["endpoint"], http["project"], http["access"]) == (
        "annif",
        "https://ai.finto.fi/v1",
        "yso-fi",
        "hidden",
    )
    assert tables["yso-ensemble-fi"]["backend"] == "mean"
    assert tables["yso-pav-fi"]["backend"] == "mean"
    nn = tables["yso-nn-fi"]
    assert nn["backend"] == "kuoro" and nn["access"] == "private"
    assert (nn["hidden_size"], nn["dropout"], nn["max_epochs"], nn["learning_rate"]) == (
        100,
        0.2,
        10,
        0.001,
    )
    assert not {"nodes", "dropout_rate", "epochs", "lr", "learn-epochs", "lmdb_map_size"} & set(nn)


def test_sources_keep_weights_and_lose_what_kuoro_cannot_fuse(imported: Imported) -> None:
    _, _, tables = imported
    assert tables["yso-ensemble-fi"]["sources"] == ["yso-tfidf-fi", "yso-omikuji-bonsai-fi:2"]
    assert tables["yso-nn-fi"]["sources"] == [
        "yso-tfidf-fi:0.5",
        "yso-omikuji-bonsai-fi",
        "yso-mllm-fi:2",
    ]
    assert tables["yso-pav-fi"]["sources"] == ["yso-tfidf-fi", "yso-http-fi"]
    assert "yso-dummy-fi" not in tables


def test_notes_explain_every_change(imported: Imported) -> None:
    text, notes, _ = imported
    expected = [
        "vocab 'yso(fi)' becomes 'yso'; the project's language picks the labels",
        "project 'yso-tfidf-fi': analyzer 'voikko(fi)' becomes 'simplemma(fi)'; "
        "Kuoro has no Voikko",
        "project 'yso-omikuji-bonsai-fi': 'ngram = 2' becomes 'ngram_max = 2'",
        "project 'yso-fasttext-fi': 'chunksize = 24' becomes 'chunk_size = 24'; Annif's chunks "
        "are sentences, Kuoro's are words: check the value",
        "project 'yso-fasttext-fi': 'wordNgrams = 2' becomes 'word_ngrams = 2'",
        "project 'yso-mllm-fi': mllm becomes Kuoro's 'lexical' source, which matches labels "
        "and ranks the matches with a small classifier learnt from the training documents",
        "project 'yso-mllm-fi': key 'min_samples = 4' has no Kuoro equivalent; dropped",
        "project 'yso-http-fi': endpoint split into endpoint = 'https://ai.finto.fi/v1' and "
        "project = 'yso-fi'",
        "project 'yso-nn-fi': nn_ensemble becomes Kuoro's default fusion model 'kuoro'; "
        "use backend = 'linear' for the per-concept linear model",
        "project 'yso-nn-fi': 'nodes = 100' becomes 'hidden_size = 100'",
        "project 'yso-nn-fi': 'dropout_rate = 0.2' becomes 'dropout = 0.2'",
        "project 'yso-nn-fi': 'epochs = 10' becomes 'max_epochs = 10'",
        "project 'yso-nn-fi': 'lr = 0.001' becomes 'learning_rate = 0.001'",
        "project 'yso-nn-fi': key 'learn-epochs = 1' dropped: `kuoro learn` uses max_epochs",
        "project 'yso-nn-fi': key 'lmdb_map_size = 1073741824' dropped: the store grows "
        "automatically",
        "project 'yso-pav-fi': Kuoro has no PAV backend; pav becomes the weighted mean 'mean'",
        "project 'yso-pav-fi': key 'min-docs = 10' has no Kuoro equivalent; dropped",
        "project 'yso-dummy-fi': backend 'dummy' has no Kuoro equivalent; project left out",
        "project 'yso-ensemble-fi': source 'yso-dummy-fi' was left out; dropped",
        "project 'yso-nn-fi': source 'yso-ensemble-fi' is itself an ensemble; Kuoro fuses "
        "source projects only; dropped",
        "project 'yso-nn-fi': source 'stw-tfidf-en' uses vocab 'stw', not 'yso'; dropped",
    ]
    for note in expected:
        assert note in notes
        assert f"#   {note}\n" in text
    assert len(notes) == len(set(notes)), "the vocab note appears once, not per project"
    assert text.startswith("# Kuoro projects, converted from ")
    assert "projects.cfg by `kuoro config import`." in text.splitlines()[0]


def test_round_trip_loads_with_the_same_values(tmp_path: Path, imported: Imported) -> None:
    text, _, tables = imported
    projects = load_projects(write(tmp_path / "projects.toml", text))
    assert set(projects) == set(tables)
    for project_id, table in tables.items():
        project = projects[project_id]
        for key, value in table.items():
            if key == "sources":
                continue
            actual = getattr(project, key) if hasattr(project, key) else project.params[key]
            assert actual == value, (project_id, key)
    assert projects["yso-tfidf-fi"].params["min_df"] == 1  # a default filled on loading
    assert projects["yso-nn-fi"].kind == "fusion"
    assert projects["yso-nn-fi"].sources == (
        SourceRef("yso-tfidf-fi", 0.5 / 3.5),
        SourceRef("yso-omikuji-bonsai-fi", 1 / 3.5),
        SourceRef("yso-mllm-fi", 2 / 3.5),
    )


def test_invalid_values_are_dropped_with_a_note_and_the_result_still_loads(
    tmp_path: Path,
) -> None:
    cfg = """\
[a]
language=fi
vocab=yso
backend=nn_ensemble
sources=b:0,b2:x,missing,b:3
dropout_rate=0.95
early_stopping=maybe
validation=0.2
members=2
[b]
language=fi
vocab=yso
backend=tfidf
analyzer=spacy(fi_core_news_sm)
limit=-5
access=secret
[b2]
language=fi
vocab=yso
backend=fasttext
loss=softmax
sublinear_tf=true
[c]
language=fi
vocab=yso
backend=http
endpoint=https://example.org/annif
[d]
language=finnish
vocab=yso
backend=tfidf
[e]
language=fi
vocab=yso
backend=ensemble
sources=missing
[v]
language=fi
backend=tfidf
"""
    result = import_annif_config(write(tmp_path / "projects.cfg", cfg))
    notes = result.notes
    assert (
        "project 'a': key 'dropout_rate = 0.95': dropout must be a number between 0 and 0.9, "
        "got 0.95; dropped (default used)"
    ) in notes
    assert (
        "project 'a': key 'early_stopping = maybe': early_stopping must be true or false, "
        'got "maybe"; dropped (default used)'
    ) in notes
    assert "project 'a': source 'b:0' has an invalid weight; weight 1 used" in notes
    assert "project 'a': source 'b2:x' has an invalid weight; weight 1 used" in notes
    assert (
        "project 'a': source 'missing' is not defined in the Annif configuration; dropped" in notes
    )
    assert "project 'a': source 'b' is named twice; dropped" in notes
    assert any(
        n.startswith("project 'b': unknown analyzer 'spacy(fi_core_news_sm)'") for n in notes
    )
    assert (
        "project 'b': key 'limit = -5': limit must be an integer between 1 and 10000, got -5; "
        "dropped (default used)"
    ) in notes
    assert (
        "project 'b': key 'access = secret': access must be one of \"public\", \"hidden\", "
        '"private", got "secret"; dropped (default used)'
    ) in notes
    assert "project 'b2': key 'sublinear_tf = true' has no Kuoro equivalent; dropped" in notes
    assert (
        "project 'c': the remote project cannot be told from 'endpoint'; project left out"
    ) in notes
    assert (
        "project 'd': language must be a 2 or 3 letter lower-case language code such as \"fi\", "
        'got "finnish"; project left out'
    ) in notes
    assert "project 'v': it has no vocab; project left out" in notes
    assert "project 'e': no usable sources remain; project left out" in notes
    projects = load_projects(write(tmp_path / "projects.toml", result.toml_text))
    assert list(projects) == ["a", "b", "b2"]
    assert projects["a"].params["validation"] == 0.2 and projects["a"].params["members"] == 2
    assert projects["a"].params["dropout"] == BACKENDS["kuoro"].params["dropout"].default
    assert projects["a"].sources == (SourceRef("b", 0.5), SourceRef("b2", 0.5))
    assert projects["b2"].params["loss"] == "softmax"


def test_annif_toml_and_projects_d(tmp_path: Path) -> None:
    directory = tmp_path / "projects.d"
    directory.mkdir()
    write(
        directory / "a.toml",
        '[t]\nlanguage = "fi"\nvocab = "yso"\nbackend = "tfidf"\nlimit = 20\n',
    )
    write(directory / "b.cfg", "[e]\nlanguage=fi\nvocab=yso\nbackend=ensemble\nsources=t:2\n")
    write(
        directory / "c.toml",
        '[e2]\nlanguage = "fi"\nvocab = "yso"\nbackend = "pav"\nsources = ["t"]\n',
    )
    projects = load_projects(write(tmp_path / "out.toml", import_annif_config(directory).toml_text))
    assert projects["t"].limit == 20
    assert projects["e"].sources == (SourceRef("t", 1.0),)
    assert projects["e2"].sources == (SourceRef("t", 1.0),)

    write(directory / "d.cfg", "[t]\nlanguage=fi\nvocab=yso\nbackend=tfidf\n")
    with pytest.raises(ConfigError, match=r"d\.cfg: project 't' is already defined in .*a\.toml"):
        import_annif_config(directory)


def test_keys_are_case_sensitive_and_interpolation_is_off(tmp_path: Path) -> None:
    cfg = "[f]\nlanguage=fi\nvocab=yso\nbackend=fasttext\nWORDNGRAMS=2\nname=100% %(x)s\n"
    tables = tomllib.loads(import_annif_config(write(tmp_path / "p.cfg", cfg)).toml_text)
    assert tables["f"]["name"] == "100% %(x)s"
    assert "word_ngrams" not in tables["f"]


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.cfg: no such file or directory"):
        import_annif_config(tmp_path / "nope.cfg")
    path = write(tmp_path / "projects.cfg", "[a]\nlanguage=fi\nthis line is not a key\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r": invalid INI: .*\[line 3\]"):
        import_annif_config(path)
    path = write(tmp_path / "dup.cfg", "[a]\nlanguage=fi\nlanguage=sv\n")
    with pytest.raises(
        ConfigError, match=r"dup\.cfg: invalid INI: .*\[line 3\]: option 'language'"
    ):
        import_annif_config(path)
    path = write(tmp_path / "bad.toml", "[a]\nlanguage = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML: .*line 2"):
        import_annif_config(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no \*\.cfg or \*\.toml project files"):
        import_annif_config(empty)
