"""Parameter counts of models by name, from the ``model_configs/*.yaml`` family files or a ``--params`` YAML.

A ``--params`` YAML may be a family file (``models: [{name, hub_id, total_params, ...}]``) or a plain mapping
``name: count``. Names match by hub id (``Qwen/Qwen2.5-7B``), by lm-eval's sanitized form
(``Qwen__Qwen2.5-7B``) or by the last path component (``Qwen2.5-7B``), case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from fsgen_eval.core.shipped import project_dir

# the project's family files: the checkout's model_configs/, else the installed package data (core.shipped)
DEFAULT_DIR = project_dir("model_configs")


@dataclass(frozen=True)
class ParamCount:
    name: str
    hub_id: str
    total: int
    non_embedding: int | None = None


def _keys(name: str) -> set[str]:
    n = name.strip().rstrip("/").lower()
    return {n, n.replace("__", "/"), n.replace("/", "__"), n.split("/")[-1], n.split("__")[-1]}


def _model_ref(path: Path, entry: dict) -> str:
    """What lm-eval is given for a model: its hub id, or a local ``path`` (relative to the repository,
    i.e. the family file's grandparent, as ``model_configs/micro.yaml`` writes it) made absolute."""
    if "hub_id" in entry:
        return str(entry["hub_id"])
    if "path" in entry:
        return str(path.resolve().parent.parent / entry["path"])
    return str(entry["name"])


def read_param_file(path: Path) -> list[ParamCount]:
    """Counts in one YAML file (family file or ``name: count`` mapping)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        try:
            return [ParamCount(m["name"], _model_ref(path, m), int(m["total_params"]),
                               m.get("non_embedding_params")) for m in data["models"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: a model entry lacks name/total_params ({err})") from None
    if isinstance(data, dict) and data and all(isinstance(v, (int, float)) for v in data.values()):
        return [ParamCount(str(k), str(k), int(v)) for k, v in data.items()]
    raise ValueError(f"{path}: expected 'models: [...]' or a mapping name -> parameter count")


class ParamTable:
    """Look up parameter counts by any of a model's names."""

    def __init__(self, counts: list[ParamCount]):
        self._by_key: dict[str, ParamCount] = {}
        for c in counts:
            for k in _keys(c.name) | _keys(c.hub_id):
                self._by_key[k] = c

    @classmethod
    def load(cls, paths: list[Path] | None = None) -> "ParamTable":
        """From the given YAML files, else from every family file in :data:`DEFAULT_DIR`."""
        files = list(paths) if paths else sorted(DEFAULT_DIR.glob("*.yaml"))
        return cls([c for f in files for c in read_param_file(f)])

    def find(self, name: str) -> ParamCount:
        """The entry of ``name``; raises ``ValueError`` naming the model when there is none."""
        for k in _keys(name):
            if k in self._by_key:
                return self._by_key[k]
        raise ValueError(f"no parameter count for model {name!r} (add it to a --params YAML)")

    def get(self, name: str, kind: str = "total") -> int:
        """Parameter count of ``name`` (``kind`` = "total" or "non_embedding"); raises naming the model."""
        c = self.find(name)
        value = c.total if kind == "total" else c.non_embedding
        if value is None:
            raise ValueError(f"no {kind} parameter count for {name!r}")
        return int(value)

    def models(self) -> list[ParamCount]:
        """Every model of the table once, smallest first."""
        return sorted(set(self._by_key.values()), key=lambda c: c.total)
