"""Where the project's own files are: the family files (``model_configs/``), the committed models
(``models/``) and the task YAMLs (``tasks/``).

The one rule, in order:

1. a source checkout: the folder above the ``fsgen_eval`` package when it holds ``pyproject.toml`` (a clone,
   or an editable install of one) — edits to the checkout's files take effect at once;
2. the copies installed with the package (``fsgen_eval/_data/<name>``: package data of a regular
   ``pip install .``, laid out as in the checkout, so a family file's model paths still resolve against
   its grandparent).

Torch-free; nothing is copied or downloaded.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the fsgen_eval package folder
CHECKOUT = PACKAGE.parent  # a source checkout's root, when this is one
SHIPPED = ("model_configs", "models", "tasks")  # the folders the package carries as package data


def project_dir(name: str) -> Path:
    """The folder ``name`` (one of :data:`SHIPPED`) of the checkout, else of the installed package data.

    Raises ``FileNotFoundError`` naming both places when neither has it (a broken install).
    """
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not one of the project's shipped folders ({', '.join(SHIPPED)})")
    candidates = [PACKAGE / "_data" / name]
    if (CHECKOUT / "pyproject.toml").is_file():
        candidates.insert(0, CHECKOUT / name)
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"the project's {name}/ folder is missing (looked in {', '.join(map(str, candidates))}): "
                            "reinstall fsgen-eval")
