"""Loading model.keras files saved by another Keras 3 release than the running one.

Users train on one side and predict on the other: locally on our pinned Keras, on Kaggle on the image's
(docs/kaggle.md, "Kaggle's versions"). Keras 3.15 writes arguments that Keras 3.13 (Kaggle's) refuses: `input_axes`
and `output_axes` in every variance-scaling initializer (HeNormal, GlorotUniform), `renorm`,
`renorm_clipping`, `renorm_momentum` in BatchNormalization ("unexpected keyword argument"), and Keras finds
built-in classes by name, past any custom_objects. When such an argument is off (None/False, or only read
when an argument that is off is on) the model does not use it, so the older Keras loads a copy of the file
whose config leaves it out; an argument the model does use is a one-line error instead.
"""
from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from ..base.console import say
from ..base.errors import UserError
from ..base.fileio import check_keras, damaged, temp_path

CONFIG = "config.json"
# Arguments that only matter when another one is on (BatchNormalization's batch renormalisation).
DEPENDS_ON = {"renorm_momentum": "renorm", "renorm_clipping": "renorm"}


def _accepted(module: str, class_name: str) -> set[str] | None:
    """The arguments this Keras's built-in layer or initializer takes (None: not one of those)."""
    import keras
    namespace = {"keras.layers": keras.layers, "keras.initializers": keras.initializers}.get(module)
    cls = getattr(namespace, class_name, None) if namespace is not None else None
    if not inspect.isclass(cls):
        return None
    names = set()
    for klass in cls.__mro__:  # a layer passes name, dtype, trainable, ... on to its base classes
        init = vars(klass).get("__init__")
        if init is not None and init is not object.__init__:
            names.update(p.name for p in inspect.signature(init).parameters.values()
                         if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD))
    return names - {"self"}


def _droppable(key: str, config: dict) -> bool:
    """An unknown argument may go when it is off (None/False) or only matters when something off is on."""
    value = config[key]
    return value is None or value is False or (key in DEPENDS_ON and config.get(DEPENDS_ON[key]) in (None, False))


def drop_unknown_arguments(node: Any, in_use: list[str] | None = None) -> list[str]:
    """Remove, in place, the arguments this Keras does not know of features the model does not use.

    Returns "Class.argument" for each one removed; unknown ones that are in use are left in place and
    listed in `in_use` as "Class(argument=value)"."""
    dropped: list[str] = []
    in_use = [] if in_use is None else in_use
    if isinstance(node, dict):
        config = node.get("config")
        accepted = _accepted(str(node.get("module")), str(node.get("class_name"))) if isinstance(config, dict) else None
        if accepted is not None:
            unknown = [k for k in config if k not in accepted]
            in_use += [f"{node['class_name']}({k}={config[k]!r})" for k in unknown if not _droppable(k, config)]
            for key in [k for k in unknown if _droppable(k, config)]:
                del config[key]
                dropped.append(f"{node['class_name']}.{key}")
        for value in node.values():
            dropped += drop_unknown_arguments(value, in_use)
    elif isinstance(node, list):
        for value in node:
            dropped += drop_unknown_arguments(value, in_use)
    return dropped


def _rewritten(path: Path, config: dict, folder: Path) -> Path:
    """A copy of the .keras zip `path` in `folder` with `config` as its config.json."""
    copy = folder / path.name
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            if item.filename == CONFIG:
                dst.writestr(item, json.dumps(config))
            else:
                with src.open(item) as fin, dst.open(item, "w") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
    return copy


def load_model(path: Path, compile: bool = True, rebuild: str = "restore it or train it again") -> Any:
    """keras.models.load_model that also reads a model.keras saved by a newer Keras 3 (see module doc); a damaged
    file (empty, truncated, not a .keras zip) is one line naming it, its size and `rebuild`, the command that makes
    it again (Keras itself says "File not found")."""
    import keras
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model; {rebuild}")
    check_keras(path, rebuild)
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read(CONFIG))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:  # a member cut short or not JSON
        raise damaged(path, f"its {CONFIG} unreadable", rebuild) from e
    in_use: list[str] = []
    dropped = drop_unknown_arguments(config, in_use)
    try:
        if not dropped:
            return keras.models.load_model(path, compile=compile)
        say(f"{path}: saved by a newer Keras; ignoring what Keras {keras.__version__} lacks and the model does "
            f"not use: {', '.join(sorted(set(dropped)))}")
        with tempfile.TemporaryDirectory(prefix="model-") as tmp:  # not beside it: /kaggle/input is read-only
            return keras.models.load_model(_rewritten(path, config, Path(tmp)), compile=compile)
    except (TypeError, ValueError) as e:
        if not in_use:
            raise
        raise UserError(f"{path} uses {', '.join(sorted(set(in_use)))}, which Keras {keras.__version__} does not "
                        f"have: load it with the Keras that saved it") from e


def save_model(model: Any, path: Path) -> None:
    """model.save to a temporary .keras beside `path`, then rename: never a half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, ".keras")
    model.save(tmp)
    tmp.replace(path)
