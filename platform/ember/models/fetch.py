"""A local model folder from a model reference that may be an MLflow model URI.

`ember serve-model` and batch jobs take `models:/NAME/VERSION` or `runs:/ID/model`
as well as a folder: an MLflow URI is downloaded into
`$EMBER_HOME/models/served/NAME` (on a multi-node cluster EMBER_HOME must be on
storage every node sees, as for the training job's outputs). A LoRA adapter
alone is accepted where `adapters=True` (`ember serve-model` serves it on its base,
`ember.models.adapters`); batch jobs need a full model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ember.config.paths import default_tracking_uri, models_dir
from ember.errors import EmberError
from ember.models.adapters import is_adapter_folder


def fetch_model(source: str, name: str, tracking_uri: str | None = None,
                adapters: bool = False) -> Path:
    """A local model folder for `source`: an MLflow model URI or a folder."""
    if source.startswith(("models:/", "runs:/")):
        folder = _download(source, name, tracking_uri)
    else:
        folder = Path(source).expanduser().resolve()
    _check_model_folder(folder, source, adapters)
    return folder


def _download(uri: str, name: str, tracking_uri: str | None) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking_uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    target = models_dir() / "served" / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    except MlflowException as exc:
        raise EmberError(f"cannot fetch {uri} from MLflow at {tracking_uri}: {exc.message}") \
            from exc
    return local


def _check_model_folder(folder: Path, source: str, adapters: bool) -> None:
    if is_adapter_folder(folder):
        if adapters:
            return
        raise EmberError(f"{source} is a LoRA adapter alone; this needs a full model (train "
                         f"with `method.export: merged`)")
    if not (folder / "config.json").is_file():
        raise EmberError(f"{source}: {folder} is not a model folder (no config.json)")
