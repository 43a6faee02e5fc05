"""projects.toml: every backend, defaults, the three sources syntaxes, and every error message."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from kuoro.config.backends import BACKENDS, PROJECT_KEYS, validate_params
from kuoro.config.projects import (
    PROJECT_SETTINGS,
    ProjectConfig,
    SourceRef,
    find_projects_file,
    load_projects,
    parse_analyzer,
)
from kuoro.errors import ConfigError, NotFoundError

ALL_BACKENDS = """
[yso-tfidf]
name = "TF-IDF"
language = "fi"
vocab = "yso"
backend = "tfidf"
analyzer = "snowball(finnish)"
limit = 50
min_df = 3
ngram_max = 2
sublinear_tf = false

[yso-omikuji]
language = "fi"
vocab = "yso"
backend = "omikuji"
cluster_balanced = false
cluster_k = 100
max_depth = 3

[yso-fasttext]
language = "fi"
vocab = "yso"
backend = "fasttext"
loss = "softmax"
lr = 1
word_ngrams = 2

[yso-lexical]
language = "fi"
vocab = "yso"
backend = "lexical"
analyzer = "simplemma(fi)"
top_k = 200

[yso-remote]
language = "fi"
vocab = "yso"
backend = "annif"
endpoint = "https://ai.finto.fi/v1"
project = "yso-fi"
access = "hidden"

[yso-file]
language = "fi"
vocab = "yso"
backend = "file"
path = "suggestions.tsv"

[yso-mean]
language = "fi"
vocab = "yso"
backend = "mean"
sources = ["yso-tfidf", "yso-omikuji"]

[yso-linear]
language = "fi"
vocab = "yso"
backend = "linear"
sources = "yso-tfidf:3,yso-fasttext"
validation = 500

[yso-nn]
language = "fi"
vocab = "yso"
backend = "kuoro"
access = "private"
allow_learn = true
sources = {yso-tfidf = 2, yso-omikuji = 1, yso-lexical = 1}
hidden_size = 128
dropout = 0.2
validation = "data/validate.tsv"
"""

SOURCE = """
[src]
language = "fi"
vocab = "yso"
backend = "tfidf"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> dict[str, ProjectConfig]:
    return load_projects(write(tmp_path / "projects.toml", text))


def load_all_backends(tmp_path: Path) -> dict[str, ProjectConfig]:
    """ALL_BACKENDS, with the validation corpus that project 'yso-nn' names beside it."""
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "validate.tsv", "text\t<http://ex/a>\n")
    return load_projects(write(tmp_path / "projects.toml", ALL_BACKENDS))


def project(body: str, backend: str = "kuoro", extra: str = "") -> str:
    """A fusion or source project 'p' over the source project 'src', plus the given keys."""
    sources = 'sources = ["src"]\n' if BACKENDS[backend].kind == "fusion" else ""
    head = f'[p]\nlanguage = "fi"\nvocab = "yso"\nbackend = "{backend}"\n'
    return f"{SOURCE}\n{head}{sources}{body}\n{extra}"


class TestValidConfig:
    def test_every_backend_loads_with_its_values_and_defaults(self, tmp_path: Path) -> None:
        projects = load_all_backends(tmp_path)
        assert set(projects) == {
            "yso-tfidf",
            "yso-omikuji",
            "yso-fasttext",
            "yso-lexical",
            "yso-remote",
            "yso-file",
            "yso-mean",
            "yso-linear",
            "yso-nn",
        }
        tfidf = projects["yso-tfidf"]
        assert (tfidf.name, tfidf.language, tfidf.vocab, tfidf.backend) == (
            "TF-IDF",
            "fi",
            "yso",
            "tfidf",
        )
        assert (tfidf.analyzer, tfidf.limit, tfidf.access, tfidf.allow_learn) == (
            "snowball(finnish)",
            50,
            "public",
            False,
        )
        assert dict(tfidf.params) == {
            "top_k": 100,
            "min_df": 3,
            "ngram_max": 2,
            "sublinear_tf": False,
        }
        assert tfidf.kind == "source" and tfidf.sources == ()

        omikuji = projects["yso-omikuji"]
        assert omikuji.name == "yso-omikuji" and omikuji.analyzer == "simple"
        assert omikuji.limit == 100
        assert omikuji.params["cluster_k"] == 100 and omikuji.params["collapse_every_n_layers"] == 0

        fasttext = projects["yso-fasttext"].params
        assert fasttext["lr"] == 1.0 and isinstance(fasttext["lr"], float)
        assert (fasttext["loss"], fasttext["dim"], fasttext["epoch"]) == ("softmax", 100, 15)

        assert projects["yso-lexical"].params == {"top_k": 200, "max_train_documents": 20000}
        assert projects["yso-lexical"].analyzer == "simplemma(fi)"
        remote = projects["yso-remote"]
        assert remote.access == "hidden"
        assert dict(remote.params) == {
            "top_k": 100,
            "endpoint": "https://ai.finto.fi/v1",
            "project": "yso-fi",
            "timeout": 30.0,
            "retries": 3,
            "batch_size": 32,
        }
        assert projects["yso-file"].params["path"] == "suggestions.tsv"

        nn = projects["yso-nn"]
        assert nn.kind == "fusion" and nn.access == "private" and nn.allow_learn
        assert nn.params["hidden_size"] == 128 and nn.params["dropout"] == 0.2
        assert nn.params["validation"] == str(tmp_path / "data" / "validate.tsv")
        assert nn.params["members"] == 1 and nn.params["loss"] == "mix"
        assert nn.params["concept_l2"] == 0.001 and nn.params["seed"] == 0
        assert projects["yso-linear"].params["validation"] == 500
        assert projects["yso-linear"].params["batch_size"] == 256
        assert projects["yso-mean"].params["validation"] == 0.1

    def test_sources_in_all_three_syntaxes_have_normalised_weights(self, tmp_path: Path) -> None:
        projects = load_all_backends(tmp_path)
        assert projects["yso-mean"].sources == (
            SourceRef("yso-tfidf", 0.5),
            SourceRef("yso-omikuji", 0.5),
        )
        assert projects["yso-linear"].sources == (
            SourceRef("yso-tfidf", 0.75),
            SourceRef("yso-fasttext", 0.25),
        )
        assert projects["yso-nn"].sources == (
            SourceRef("yso-tfidf", 0.5),
            SourceRef("yso-omikuji", 0.25),
            SourceRef("yso-lexical", 0.25),
        )
        assert "sources" not in projects["yso-nn"].params

    def test_array_weights_and_spaces(self, tmp_path: Path) -> None:
        text = project("", "mean").replace('["src"]', '[" src : 0.5 "]')
        assert load(tmp_path, text)["p"].sources == (SourceRef("src", 1.0),)

    def test_projects_d_directory_reads_every_toml_file(self, tmp_path: Path) -> None:
        directory = tmp_path / "projects.d"
        directory.mkdir()
        write(directory / "1-sources.toml", SOURCE)
        write(
            directory / "2-fusion.toml",
            '[f]\nlanguage = "fi"\nvocab = "yso"\nbackend = "mean"\nsources = ["src"]\n',
        )
        write(directory / "notes.txt", "not a project file")
        projects = load_projects(directory)
        assert list(projects) == ["src", "f"]
        assert projects["f"].sources == (SourceRef("src", 1.0),)

    def test_every_backend_default_passes_its_own_validation(self) -> None:
        for spec in BACKENDS.values():
            for param in spec.params.values():
                if not param.required:
                    assert param.check(param.default) == param.default, (spec.name, param.name)


def error_cases() -> list[tuple[str, str]]:
    """(projects.toml text, expected message; "…" stands for any text) for every kind of mistake."""
    return [
        # Unknown keys, with Annif's names mapped to Kuoro's and typos corrected.
        (
            project("nodes = 100"),
            "project 'p': unknown parameter 'nodes' for backend 'kuoro'. Did you mean "
            "'hidden_size'? Allowed: batch_size, calibration, concept_l2, ",
        ),
        (
            project("dropout_rate = 0.2"),
            "unknown parameter 'dropout_rate'…Did you mean 'dropout'",
        ),
        (project("epochs = 5"), "unknown parameter 'epochs'…Did you mean 'max_epochs'"),
        (project("lr = 0.1"), "unknown parameter 'lr'…Did you mean 'learning_rate'"),
        (
            project("lr = 0.1", "mean"),
            "unknown parameter 'lr' for backend 'mean'. 'lr' is a parameter of backend fasttext. "
            "Allowed: calibration, seed, sources, validation",
        ),
        (
            project("lmdb_map_size = 1024"),
            "unknown parameter 'lmdb_map_size'…Kuoro has no equivalent: the store grows "
            "automatically",
        ),
        (
            project('"learn-epochs" = 1'),
            "unknown parameter 'learn-epochs'…Kuoro has no equivalent: `kuoro learn` uses "
            "max_epochs",
        ),
        (project("wordNgrams = 2", "fasttext"), "'wordNgrams'…Did you mean 'word_ngrams'"),
        (project("minCount = 2", "fasttext"), "'minCount'…Did you mean 'min_count'"),
        (project("epochs = 2", "fasttext"), "'epochs'…Did you mean 'epoch'"),
        (project("ngram = 2", "omikuji"), "'ngram'…Did you mean 'ngram_max'"),
        (project("hiden_size = 8"), "unknown parameter 'hiden_size'…Did you mean 'hidden_size'"),
        (
            project("top_k = 8"),
            "unknown parameter 'top_k' for backend 'kuoro'. 'top_k' is a parameter of backend "
            "annif, fasttext, file, lexical, omikuji, tfidf. Allowed:",
        ),
        (
            project("", "tfidf", 'sources = ["src"]'),
            "unknown parameter 'sources' for backend 'tfidf'. 'sources' is a parameter of "
            "backend kuoro, linear, mean.",
        ),
        (project("[p.params]\nhidden_size = 3"), "key 'params' is a table; backend parameters go"),
        # Wrong types: booleans are not numbers and numbers are not booleans.
        (
            project("hidden_size = 6.5"),
            "parameter 'hidden_size' must be an integer between 1 and 4096, got 6.5",
        ),
        (project("hidden_size = true"), "parameter 'hidden_size' must be an integer…, got true"),
        (project('hidden_size = "64"'), "parameter 'hidden_size' must be…, got \"64\""),
        (project("early_stopping = 1"), "parameter 'early_stopping' must be true or false, got 1"),
        (project('early_stopping = "yes"'), "'early_stopping' must be true or false, got \"yes\""),
        (project("dropout = false"), "parameter 'dropout' must be a number"),
        # Out of range and bad choices.
        (
            project("dropout = 1.5"),
            "project 'p': parameter 'dropout' must be a number between 0 and 0.9, got 1.5",
        ),
        (project("members = 65"), "'members' must be an integer between 1 and 64, got 65"),
        (
            project("learning_rate = 0"),
            "'learning_rate' must be a number greater than 0 and at most 1, got 0",
        ),
        (
            project("weight_decay = -1.0"),
            "'weight_decay' must be a number between 0 and 1, got -1.0",
        ),
        (project("validation = 1.5"), "'validation' must be a fraction between 0 and 1…got 1.5"),
        (project("validation = 0"), "'validation' must be…a document count…, got 0"),
        (project('loss = "mse"'), '\'loss\' must be one of "bce", "listwise", "mix", got "mse"'),
        (
            project('loss = "bce"', "fasttext"),
            '\'loss\' must be one of "ova", "hs", "softmax", "ns"',
        ),
        (
            project("ngram_max = 4", "tfidf"),
            "'ngram_max' must be an integer between 1 and 3, got 4",
        ),
        (
            project("cluster_k = 1", "omikuji"),
            "'cluster_k' must be an integer between 2 and 1000, got 1",
        ),
        (
            project("batch_size = 33", "annif", 'endpoint = "http://x/v1"\nproject = "y"'),
            "between 1 and 32",
        ),
        (
            project('endpoint = "ftp://x"\nproject = "y"', "annif"),
            "'endpoint' must be an http:// or https:// URL",
        ),
        # Missing and unknown project keys.
        (
            project("", "annif", 'endpoint = "http://x/v1"'),
            "missing required parameter 'project' for backend 'annif'",
        ),
        (project("", "file"), "missing required parameter 'path' for backend 'file' (TSV file"),
        ("[p]\nvocab = 'yso'\nbackend = 'tfidf'", "project 'p': missing required key 'language'"),
        ("[p]\nlanguage = 'fi'\nbackend = 'tfidf'", "project 'p': missing required key 'vocab'"),
        (
            "[p]\nlanguage = 'fi'\nvocab = 'yso'",
            "project 'p': missing required key 'backend' (one of annif,",
        ),
        (
            "[p]\nlanguage = 'fi'\nvocab = 'yso'\nbackend = 'nn_ensemble'",
            "project 'p': key 'backend': unknown backend 'nn_ensemble'. Annif's 'nn_ensemble' is "
            "Kuoro's 'kuoro'. Allowed: annif, fasttext, file, kuoro, lexical, linear, mean, "
            "omikuji, tfidf",
        ),
        (
            "[p]\nlanguage = 'fi'\nvocab = 'yso'\nbackend = 'tfidff'",
            "unknown backend 'tfidff'. Did you mean 'tfidf'",
        ),
        (
            "[p]\nlanguage = 'finnish'\nvocab = 'yso'\nbackend = 'tfidf'",
            "key 'language' must be a 2 or 3 letter",
        ),
        (
            "[p]\nlanguage = 'fi'\nvocab = 'yso fi'\nbackend = 'tfidf'",
            "key 'vocab' must be a vocabulary name",
        ),
        (
            "['p q']\nlanguage = 'fi'\nvocab = 'yso'\nbackend = 'tfidf'",
            "project 'p q': a project id may only",
        ),
        ("p = 3", "top-level key 'p' is not a project table"),
        (
            project("limit = 0"),
            "project 'p': key 'limit' must be an integer between 1 and 10000, got 0",
        ),
        (project("limit = true"), "key 'limit' must be an integer between 1 and 10000, got true"),
        (
            project("access = 'secret'"),
            'key \'access\' must be one of "public", "hidden", "private", got "secret"',
        ),
        (project("allow_learn = 'yes'"), "key 'allow_learn' must be true or false, got \"yes\""),
        (project("name = 3"), "key 'name' must be a string, got 3"),
        # Analyzers.
        (
            project("analyzer = 'voikko(fi)'"),
            "key 'analyzer': analyzer 'voikko(fi)' is not available in Kuoro; use 'simplemma(fi)'",
        ),
        (
            project("analyzer = 'spacy(en)'"),
            "unknown analyzer 'spacy(en)'. Allowed: simple, snowball, simplemma",
        ),
        (
            project("analyzer = 'snowball'"),
            "analyzer 'snowball' needs a language, e.g. 'snowball(finnish)'",
        ),
        # Fusion sources.
        (
            "[p]\nlanguage = 'fi'\nvocab = 'yso'\nbackend = 'mean'",
            "missing required parameter 'sources' for backend 'mean'",
        ),
        (
            project("", "mean").replace('["src"]', "[]"),
            "key 'sources' is empty; a fusion project needs a source",
        ),
        (
            project("", "mean").replace('["src"]', '"src,srcc"'),
            "names project 'srcc', which is not defined. Did you mean 'src'?",
        ),
        (
            project("", "mean").replace('["src"]', '["src", "p"]'),
            "names project 'p', which is a fusion project (backend 'mean')",
        ),
        (
            project(
                "", "mean", "[other]\nlanguage = 'fi'\nvocab = 'gnd'\nbackend = 'tfidf'"
            ).replace('["src"]', '["other"]'),
            "project 'p': key 'sources': project 'other' uses vocab 'gnd' but 'p' uses 'yso'",
        ),
        (
            project("", "mean").replace('["src"]', '["src:0"]'),
            "the weight of 'src' must be a number greater than 0 and at most 1000000, got \"0\"",
        ),
        (
            project("", "mean").replace('["src"]', '["src:x"]'),
            "the weight of 'src' must be…got \"x\"",
        ),
        (
            project("", "mean").replace('["src"]', "{src = -1}"),
            "the weight of 'src' must be…got -1",
        ),
        (
            project("", "mean").replace('["src"]', "{src = true}"),
            "the weight of 'src' must be…got true",
        ),
        (project("", "mean").replace('["src"]', '"src,src:2"'), "key 'sources' names 'src' twice"),
        (project("", "mean").replace('["src"]', "3"), "key 'sources' must be a list such as"),
        (
            project("", "mean").replace('["src"]', '["a b"]'),
            "key 'sources' names an invalid project id",
        ),
    ]


@pytest.mark.parametrize(("text", "message"), error_cases())
def test_error_messages_name_file_project_key_and_value(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "projects.toml", text)
    pattern = ".*".join(re.escape(part) for part in [f"{path}: ", *message.split("…")])
    with pytest.raises(ConfigError, match=pattern):
        load_projects(path)


class TestFiles:
    def test_toml_syntax_error_names_file_and_line(self, tmp_path: Path) -> None:
        path = write(tmp_path / "projects.toml", SOURCE + "\nbroken = = 3\n")
        with pytest.raises(ConfigError, match=r"projects\.toml: invalid TOML: .*line 7"):
            load_projects(path)

    def test_duplicate_id_across_projects_d_files_names_both(self, tmp_path: Path) -> None:
        write(tmp_path / "a.toml", SOURCE)
        write(tmp_path / "b.toml", SOURCE)
        with pytest.raises(
            ConfigError, match=r"b\.toml: project 'src' is already defined in .*a\.toml"
        ):
            load_projects(tmp_path)

    def test_error_in_projects_d_names_the_file_of_the_project(self, tmp_path: Path) -> None:
        write(tmp_path / "a.toml", SOURCE)
        write(
            tmp_path / "b.toml",
            "[f]\nlanguage = 'fi'\nvocab = 'gnd'\nbackend = 'mean'\nsources = 'src'",
        )
        with pytest.raises(ConfigError, match=r"b\.toml: project 'f': key 'sources': .*'gnd'"):
            load_projects(tmp_path)

    def test_missing_file_and_empty_directory(self, tmp_path: Path) -> None:
        with pytest.raises(NotFoundError, match=r"nope\.toml: no such file"):
            load_projects(tmp_path / "nope.toml")
        with pytest.raises(ConfigError, match=r"no \*\.toml project files in this directory$"):
            load_projects(tmp_path)
        write(tmp_path / "projects.cfg", "[p]\n")
        with pytest.raises(ConfigError, match=r"the \.cfg files there are Annif's"):
            load_projects(tmp_path)

    def test_annif_ini_file_is_refused_with_the_import_command(self, tmp_path: Path) -> None:
        path = write(tmp_path / "projects.cfg", "[p]\nbackend=tfidf\n")
        with pytest.raises(
            ConfigError, match="Annif INI file; convert it with `kuoro config import"
        ):
            load_projects(path)

    def test_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "projects.toml"
        path.write_bytes(b"[p]\nname = '\xff'\n")
        with pytest.raises(ConfigError, match=r"projects\.toml: not UTF-8"):
            load_projects(path)


class TestFindProjectsFile:
    def test_order_explicit_env_toml_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("KUORO_PROJECTS", raising=False)
        write(tmp_path / "explicit.toml", SOURCE)
        write(tmp_path / "env.toml", SOURCE)
        (tmp_path / "projects.d").mkdir()
        assert find_projects_file(None, tmp_path) == tmp_path / "projects.d"
        write(tmp_path / "projects.toml", SOURCE)
        assert find_projects_file(None, tmp_path) == tmp_path / "projects.toml"
        monkeypatch.setenv("KUORO_PROJECTS", "env.toml")
        assert find_projects_file(None, tmp_path) == tmp_path / "env.toml"
        assert find_projects_file("explicit.toml", tmp_path) == tmp_path / "explicit.toml"
        assert (
            find_projects_file(tmp_path / "explicit.toml", Path("/")) == tmp_path / "explicit.toml"
        )

    def test_missing_paths_say_what_was_tried(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("KUORO_PROJECTS", raising=False)
        with pytest.raises(NotFoundError, match=r"tried .*projects\.toml, .*projects\.d$"):
            find_projects_file(None, tmp_path)
        write(tmp_path / "projects.cfg", "")
        with pytest.raises(NotFoundError, match=r"found Annif's projects\.cfg: convert it"):
            find_projects_file(None, tmp_path)
        with pytest.raises(NotFoundError, match=r"projects file other\.toml does not exist"):
            find_projects_file("other.toml", tmp_path)
        monkeypatch.setenv("KUORO_PROJECTS", "gone.toml")
        with pytest.raises(NotFoundError, match=r"KUORO_PROJECTS names gone\.toml, which does not"):
            find_projects_file(None, tmp_path)


class TestAnalyzer:
    @pytest.mark.parametrize(
        ("spec", "parsed"),
        [
            ("simple", ("simple", None)),
            ("snowball(finnish)", ("snowball", "finnish")),
            (" simplemma( fi ) ", ("simplemma", "fi")),
        ],
    )
    def test_valid(self, spec: str, parsed: tuple[str, str | None]) -> None:
        assert parse_analyzer(spec) == parsed

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("voikko(fi)", "not available in Kuoro; use 'simplemma(fi)'"),
            ("voikko", "use 'simplemma(fi)'"),
            ("simple(x)", "analyzer 'simple' takes no argument"),
            ("simplemma", "analyzer 'simplemma' needs a language, e.g. 'simplemma(fi)'"),
            ("snowball(a(b))", "analyzer 'snowball(a(b))' is malformed"),
            ("lucene", "unknown analyzer 'lucene'"),
        ],
    )
    def test_invalid(self, spec: str, message: str) -> None:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_analyzer(spec)


def test_project_settings_are_the_keys_backends_treat_as_project_keys() -> None:
    assert tuple(PROJECT_SETTINGS) == PROJECT_KEYS


def test_validate_params_directly() -> None:
    assert validate_params("p", "lexical", {}) == {"top_k": 100, "max_train_documents": 20000}
    with pytest.raises(ConfigError, match="'limit' is a project setting, not a backend parameter"):
        validate_params("p", "lexical", {"limit": 3})
    with pytest.raises(ConfigError, match=r"project 'p': unknown backend 'svc'\. Allowed: annif,"):
        validate_params("p", "svc", {})


class TestValidationPath:
    def test_relative_path_is_taken_from_the_projects_file_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        folder = tmp_path / "conf"
        (folder / "corpora").mkdir(parents=True)
        write(folder / "corpora" / "held.tsv", "text\t<http://ex/a>\n")
        monkeypatch.chdir(tmp_path)  # not where the projects file is
        text = project('validation = "corpora/held.tsv"')
        config = load_projects(write(folder / "projects.toml", text))["p"]
        assert config.params["validation"] == str(folder / "corpora" / "held.tsv")
        absolute = project(f"validation = {str(folder / 'corpora')!r}", "mean")
        config = load_projects(write(tmp_path / "other.toml", absolute))["p"]
        assert config.params["validation"] == str(folder / "corpora"), "a directory corpus"

    def test_missing_path_names_project_key_and_path_tried(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "conf").mkdir()
        write(tmp_path / "held.tsv", "text\t<http://ex/a>\n")
        monkeypatch.chdir(tmp_path)  # held.tsv is here, but not beside the projects file
        path = write(tmp_path / "conf" / "projects.toml", project('validation = "held.tsv"'))
        message = (
            f"{path}: project 'p': key 'validation': \"held.tsv\" is not a number and no file "
            f"or directory {tmp_path / 'conf' / 'held.tsv'} exists (a relative path is taken "
            "from the folder of the projects file)"
        )
        with pytest.raises(ConfigError) as caught:
            load_projects(path)
        assert str(caught.value) == message
        with pytest.raises(ConfigError, match=r"key 'validation': \"0\.2\" is not a number"):
            load(tmp_path, project('validation = "0.2"'))

    def test_cooccurrence_is_sources_none_or_an_existing_corpus(self, tmp_path: Path) -> None:
        assert load(tmp_path, project(""))["p"].params["cooccurrence"] == "sources"
        assert load(tmp_path, project('cooccurrence = "none"'))["p"].params["cooccurrence"] == (
            "none"
        )
        write(tmp_path / "titles.tsv", "text\t<http://ex/a>\n")
        config = load(tmp_path, project('cooccurrence = "titles.tsv"'))["p"]
        assert config.params["cooccurrence"] == str(tmp_path / "titles.tsv")
        with pytest.raises(
            ConfigError,
            match=r"key 'cooccurrence': \"titels.tsv\" is not \"sources\" or \"none\" and no file",
        ):
            load(tmp_path, project('cooccurrence = "titels.tsv"'))
        with pytest.raises(ConfigError, match="cooccurrence"):
            load(tmp_path, project("cooccurrence = 3"))


class TestNumbersAreFiniteAndBounded:
    def test_every_numeric_parameter_has_a_finite_range(self) -> None:
        specs = [*PROJECT_SETTINGS.values()]
        specs += [spec for backend in BACKENDS.values() for spec in backend.params.values()]
        for spec in specs:
            if spec.type in (int, float):
                assert spec.min is not None and spec.max is not None, spec.name
                assert spec.check(spec.max) == spec.max
                with pytest.raises(ValueError, match="must be"):
                    spec.check(spec.max + 1)
            if spec.type is float:
                for value in (math.inf, -math.inf, math.nan):
                    with pytest.raises(ValueError, match="must be"):
                        spec.check(value)

    @pytest.mark.parametrize(
        ("body", "backend", "message"),
        [
            ("learning_rate = inf", "kuoro", "'learning_rate' must be a number greater than 0 and"),
            ("learning_rate = nan", "linear", "'learning_rate' must be…got nan"),
            ("learning_rate = 1e300", "kuoro", "'learning_rate' must be…got 1e+300"),
            ("dropout = nan", "kuoro", "'dropout' must be a number between 0 and 0.9, got nan"),
            ("weight_decay = inf", "kuoro", "'weight_decay' must be…got inf"),
            ("concept_l2 = 1e308", "kuoro", "'concept_l2' must be…got 1e+308"),
            ("hidden_size = 100000", "kuoro", "'hidden_size' must be an integer between 1 and"),
            ("batch_size = 1000000000", "kuoro", "'batch_size' must be an integer between 1 and"),
            ("max_epochs = 1000000000", "linear", "'max_epochs' must be an integer between 1"),
            ("patience = 1000000000", "kuoro", "'patience' must be an integer between 0 and"),
            ("seed = 18446744073709551616", "mean", "'seed' must be an integer between 0 and"),
            ("validation = inf", "mean", "'validation' must be…got inf"),
            ("validation = nan", "mean", "'validation' must be…got nan"),
            ("validation = 10000000000", "mean", "'validation' must be…got 10000000000"),
            ("top_k = 100000", "tfidf", "'top_k' must be an integer between 1 and 10000"),
            ("lr = inf", "fasttext", "'lr' must be a number greater than 0 and at most 10"),
            ("dim = 1000000", "fasttext", "'dim' must be an integer between 1 and 2048"),
            ("limit = 1000000", "tfidf", "key 'limit' must be an integer between 1 and 10000"),
            (
                "timeout = inf",
                "annif",
                "'timeout' must be a number greater than 0 and at most 3600, got inf",
            ),
            ("min_df = " + "9" * 400, "tfidf", "'min_df' must be an integer between 1 and"),
        ],
    )
    def test_out_of_range_values_are_errors(
        self, tmp_path: Path, body: str, backend: str, message: str
    ) -> None:
        extra = 'endpoint = "http://x/v1"\nproject = "y"' if backend == "annif" else ""
        path = write(tmp_path / "projects.toml", project(body, backend, extra))
        pattern = ".*".join(re.escape(part) for part in message.split("…"))
        with pytest.raises(ConfigError, match=pattern):
            load_projects(path)

    @pytest.mark.parametrize(
        "sources", ['["src:1e308", "src2:1e308"]', "{src = 1e308, src2 = 1e308}", '"src:inf"']
    )
    def test_source_weights_are_bounded(self, tmp_path: Path, sources: str) -> None:
        text = project("", "mean", SOURCE.replace("[src]", "[src2]")).replace('["src"]', sources)
        with pytest.raises(ConfigError, match=r"the weight of 'src' must be a number greater than"):
            load(tmp_path, text)
        weights = '["src:1000000", "src2:1000000"]'
        text = project("", "mean", SOURCE.replace("[src]", "[src2]")).replace('["src"]', weights)
        assert [ref.weight for ref in load(tmp_path, text)["p"].sources] == [0.5, 0.5]


class TestTyposAndAllErrors:
    @pytest.mark.parametrize(
        ("key", "meant"),
        [("analyser", "analyzer"), ("languag", "language"), ("limt", "limit"), ("acces", "access")],
    )
    def test_typos_of_project_keys_are_named(self, tmp_path: Path, key: str, meant: str) -> None:
        with pytest.raises(ConfigError) as caught:
            load(tmp_path, project(f'{key} = "x"', "tfidf"))
        message = str(caught.value)
        assert f"unknown parameter '{key}' for backend 'tfidf'. Did you mean '{meant}'?" in message
        assert (
            "Allowed: min_df, ngram_max, sublinear_tf, top_k; and in every project: name, "
            "language, vocab, backend, analyzer, limit, access, allow_learn, thresholds"
        ) in message

    def test_every_error_of_a_file_is_reported_at_once(self, tmp_path: Path) -> None:
        text = (
            SOURCE
            + '\n[a]\nlanguage = "fi"\nvocab = "yso"\nbackend = "tfidf"\nanalyser = "simple"\n'
            "limit = 0\nmin_df = -1\n"
            '\n[b]\nlanguage = "finnish"\nvocab = "yso"\nbackend = "tfidff"\n'
            '\n[c]\nlanguage = "fi"\nvocab = "yso"\nbackend = "mean"\n'
            'sources = ["src", "a", "nope"]\nlearning_rate = inf\n'
            '\n[d]\nlanguage = "fi"\nvocab = "yso"\nbackend = "kuoro"\nsources = ["src"]\n'
            "hidden_size = 1e9\nmembers = 1000\n"
        )
        path = write(tmp_path / "projects.toml", text)
        with pytest.raises(ConfigError) as caught:
            load_projects(path)
        lines = str(caught.value).splitlines()
        expected = [
            "project 'a': key 'limit' must be an integer between 1 and 10000, got 0",
            "project 'a': unknown parameter 'analyser' for backend 'tfidf'. Did you mean "
            "'analyzer'?",
            "project 'a': parameter 'min_df' must be an integer between 1 and 1000000, got -1",
            "project 'b': key 'language' must be a 2 or 3 letter",
            "project 'b': key 'backend': unknown backend 'tfidff'. Did you mean 'tfidf'?",
            "project 'c': unknown parameter 'learning_rate' for backend 'mean'",
            "project 'd': parameter 'hidden_size' must be an integer between 1 and 4096",
            "project 'd': parameter 'members' must be an integer between 1 and 64, got 1000",
            "project 'c': key 'sources' names project 'nope', which is not defined",
        ]
        assert len(lines) == len(expected), lines
        for line, start in zip(lines, expected, strict=True):
            assert line.startswith(f"{path}: {start}"), (line, start)
        assert lines[0].endswith("[and 8 more errors below]")
        # 'a' has errors of its own: it is not reported again as an unknown source of 'c'.
        assert not any("'a', which" in line for line in lines)

    def test_cli_shows_every_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from kuoro.cli import main

        text = project("hidden_size = 0\nmembers = 0\nanalyser = 'x'")
        path = write(tmp_path / "projects.toml", text)
        assert main(["--projects", str(path), "list-projects"]) == 1
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith(f"kuoro: error: {path}: project 'p': unknown parameter")
        assert err[0].endswith("[and 2 more errors below]")
        assert [line.split(": ", 2)[2][:27] for line in err[1:]] == [
            "parameter 'hidden_size' mus",
            "parameter 'members' must be",
        ]


def test_typed_fusion_parameters_are_the_catalogues() -> None:
    """Each fusion family's dataclass has exactly the catalogue's parameters (less sources),
    with values of the catalogue's types, and no defaults of its own."""
    import dataclasses

    from kuoro.config.params import FAMILIES, fusion_params

    kinds = {bool: bool, int: int, float: (int, float), str: str}
    for backend, cls in FAMILIES.items():
        fields = dataclasses.fields(cls)
        assert {f.name for f in fields} == set(BACKENDS[backend].params) - {"sources"}, backend
        assert all(f.default is dataclasses.MISSING for f in fields), backend
        defaults = fusion_params(backend, {})
        for name, spec in BACKENDS[backend].params.items():
            if name == "sources":
                continue
            assert getattr(defaults, name) == spec.default, (backend, name)
            if spec.type in kinds:
                assert isinstance(getattr(defaults, name), kinds[spec.type]), (backend, name)
    with pytest.raises(ConfigError, match="parameter 'hidden_size' must be an integer"):
        fusion_params("kuoro", {"hidden_size": 0})
    with pytest.raises(ConfigError, match="'tfidf' is not a fusion backend"):
        fusion_params("tfidf", {})
