"""The data directory: where loaded vocabularies and trained models are kept."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kuoro.errors import KuoroError, NotFoundError, VocabularyError
from kuoro.project.model_files import CURRENT
from kuoro.util.locks import FileLock
from kuoro.vocab.vocabulary import Vocabulary

DATADIR_ENV = "KUORO_DATADIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class VocabularyUpdate:
    """What storing a vocabulary changed compared with the version already stored."""

    added: int
    deprecated: int
    kept: int
    replaced_existing: bool
    # Set when the stored version was damaged and replaced (--force): what became of its ids.
    repaired: str | None = None


class DataDir:
    """A directory holding ``vocabs/NAME.npz`` and, later, ``projects/ID/`` model files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def resolve(cls, explicit: str | Path | None = None) -> DataDir:
        """The directory given, else ``$KUORO_DATADIR``, else ``./data``."""
        return cls(explicit or os.environ.get(DATADIR_ENV) or "data")

    def vocab_path(self, name: str) -> Path:
        check_name(name, "vocabulary")
        return self.root / "vocabs" / f"{name}.npz"

    def project_dir(self, project_id: str) -> Path:
        check_name(project_id, "project")
        return self.root / "projects" / project_id

    def current_pointer(self, project_id: str) -> Path:
        """The file naming the project's current model version (present once trained)."""
        return self.project_dir(project_id) / CURRENT

    def project_lock(self, project_id: str) -> FileLock:
        """The lock a process holds while it changes the project's model or its files."""
        check_name(project_id, "project")
        return FileLock(self.root / "projects" / f"{project_id}.lock", f"project '{project_id}'")

    def store_path(self, key: str) -> Path:
        """A suggestion store shared by every fusion project over the same sources and
        corpus; ``key`` identifies them (see ``project.stores.store_key``)."""
        check_name(key, "store")
        return self.root / "stores" / f"{key}.store"

    def store_lock(self, store: Path) -> FileLock:
        """The lock of a store: held exclusively to build it, shared to read it."""
        return FileLock(store.with_name(store.name + ".lock"), f"suggestion store {store}")

    def stores(self) -> list[Path]:
        """Every shared suggestion store."""
        folder = self.root / "stores"
        return sorted(folder.glob("*.store")) if folder.is_dir() else []

    def recorded_store(self, recorded: str, project_id: str) -> Path:
        """The store a model's manifest names: ``stores/KEY.store``, relative to the data
        directory (so that the directory can move); in a model trained before stores were
        shared, the path of the project's own store then (wherever the directory was)."""
        parts = Path(recorded).parts
        if len(parts) == 2 and parts[0] == "stores":
            return self.root / recorded
        return self.legacy_store_path(project_id)

    def trained_project_ids(self) -> list[str]:
        """The projects that have a current model in this directory, configured or not."""
        folder = self.root / "projects"
        if not folder.is_dir():
            return []
        return sorted(p.parent.name for p in folder.glob(f"*/{CURRENT}") if p.is_file())

    def legacy_validation_store_path(self, project_id: str) -> Path:
        """Where a fusion project kept the store of its validation corpus before stores were
        shared."""
        return self.project_dir(project_id).with_name(f"{project_id}.validation.store")

    def legacy_store_path(self, project_id: str) -> Path:
        """Where a fusion project kept its own store before stores were shared."""
        return self.project_dir(project_id).with_name(f"{project_id}.store")

    def learn_store_path(self, project_id: str) -> Path:
        """The store of the documents a ``learn`` of the project is given (scratch)."""
        return self.project_dir(project_id).with_name(f"{project_id}.learn.store")

    def checkpoint_dir(self, project_id: str) -> Path:
        """Where a fusion project's training saves every epoch, to resume after a crash."""
        return self.project_dir(project_id).with_name(f"{project_id}.training")

    def hyperopt_storage(self, project_id: str) -> Path:
        """The default SQLite file of the project's hyperparameter search."""
        return self.project_dir(project_id).with_name(f"{project_id}.hyperopt.sqlite3")

    def thresholds_path(self, project_id: str) -> Path:
        """The per-concept thresholds ``kuoro optimize --per-concept`` learnt for the
        project's model."""
        return self.project_dir(project_id).with_name(f"{project_id}.thresholds.npz")

    def project_files(self, project_id: str) -> list[Path]:
        """What the project has in the data directory besides shared stores: its model
        versions, learn store, training checkpoint, hyperparameter search and per-concept
        thresholds."""
        candidates = [
            self.project_dir(project_id),
            self.thresholds_path(project_id),
            self.legacy_store_path(project_id),
            self.legacy_validation_store_path(project_id),
            self.learn_store_path(project_id),
            self.checkpoint_dir(project_id),
            self.hyperopt_storage(project_id),
        ]
        return [path for path in candidates if path.exists()]

    def public_message(self, message: str) -> str:
        """``message`` with this directory's absolute path left out (the paths in it made
        relative to the directory), for answers to remote clients."""
        for root in sorted({str(self.root.resolve()), str(self.root)}, key=len, reverse=True):
            message = message.replace(root + os.sep, "")
        return message

    def vocabulary_names(self) -> list[str]:
        folder = self.root / "vocabs"
        return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []

    def load_vocabulary(self, name: str) -> Vocabulary:
        path = self.vocab_path(name)
        if not path.exists():
            known = ", ".join(self.vocabulary_names()) or "none"
            raise NotFoundError(
                f"vocabulary '{name}' is not loaded in {self.root} (loaded: {known}); "
                f"load it with: kuoro load-vocab {name} FILE"
            )
        try:
            return Vocabulary.load(path)
        except VocabularyError as exc:
            raise VocabularyError(f"{exc}; {_replace_hint(name)}") from exc

    def store_vocabulary(
        self, vocab: Vocabulary, *, source: str | None = None, force: bool = False
    ) -> tuple[Vocabulary, VocabularyUpdate]:
        """Store ``vocab`` under its name; an earlier version keeps its concept ids.

        A damaged stored version is an error unless ``force``: then ``vocab`` replaces it,
        keeping the concept ids that :meth:`Vocabulary.salvage` recovers, else starting afresh.
        """
        path = self.vocab_path(vocab.name)
        old: Vocabulary | None = None
        repaired: str | None = None
        if path.exists():
            try:
                old = Vocabulary.load(path)
            except VocabularyError as exc:
                if not force:
                    raise VocabularyError(f"{exc}; {_replace_hint(vocab.name)}") from exc
                old, note = Vocabulary.salvage(path)
                if old is None:
                    repaired = (
                        f"the stored vocabulary was damaged and {note}: concept ids start "
                        f"afresh, so every project that uses vocabulary '{vocab.name}' must be "
                        "retrained"
                    )
                else:
                    repaired = f"the stored vocabulary was damaged; {note}"
        if old is not None:
            merged = old.updated_with(vocab)
            newly_deprecated = int((merged.deprecated[: len(old)] & ~old.deprecated).sum())
            update = VocabularyUpdate(
                added=len(merged) - len(old),
                deprecated=newly_deprecated,
                kept=len(old) - newly_deprecated,
                replaced_existing=True,
                repaired=repaired,
            )
        else:
            merged = vocab
            update = VocabularyUpdate(
                len(vocab), 0, 0, replaced_existing=path.exists(), repaired=repaired
            )
        merged.save(path, source=source)
        return merged, update


def _replace_hint(name: str) -> str:
    return (
        f"replace it with: kuoro load-vocab {name} FILE --force "
        "(concept ids are kept where they can be recovered)"
    )


def check_name(name: str, what: str) -> None:
    """Names become file names: allow letters, digits, '-', '_' and '.' only."""
    if not _NAME.match(name):
        raise KuoroError(
            f"invalid {what} name '{name}': use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
