"""The configuration reference (docs/configuration.md), generated from the settings models.

    python -m ember.cli.config_reference > docs/configuration.md

Design choices:
- The pydantic models are the schema and each field's `description=` is its
  documentation, so the reference is the code's; a unit test keeps the committed
  file equal to this output (as the Grafana dashboard is kept).
- Nested models flatten into dotted keys (`models[].engine.max_model_len`,
  `search_space.<path>.low`), in the order the fields are declared, one table per
  kind of config file.
- It documents upper-layer configs (serving) beside lower ones, so it lives
  with the CLI, not in `ember.config` (the bottom layer); the model classes are
  imported inside `documented_models()`, not when this module loads.
"""

from __future__ import annotations

import importlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REGENERATE = "python -m ember.cli.config_reference > docs/configuration.md"


@dataclass(frozen=True)
class Section:
    """One kind of config file: its model, where it is used, and how it is set."""

    title: str
    model_path: str  # "module:Class", imported when the reference is built
    intro: str


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


SECTIONS = (
    Section(
        "Serve application", "ember.serving.rag.config:RAGAppConfig",
        "`args:` of an application in a Serve config (`cluster/serve/local.yaml`,\n"
        "`cluster/serve/multi-gpu.yaml`; the rest of those files is Ray's Serve schema).\n"
        "Ember's applications are `serve_apps.rag:build_app` (args: `RAGAppConfig`,\n"
        "`ember.serving.rag.config`) and `serve_apps.llm:build_app` (args: `LLMAppConfig`,\n"
        "`ember.serving.config`: the same without `rag`)."),
    Section(
        "Ingestion", "ember.ingest.config:IngestConfig",
        "An ingest config (`cluster/jobs/ingest-*.yaml`, `ember.ingest.config.IngestConfig`):\n"
        "`ember ingest` flags override it, `EMBER_INGEST_*` variables too."),
    Section(
        "Fine-tuning job", "ember.training.config:SFTJobConfig",
        "An SFT job config (`cluster/jobs/sft-*.yaml`, `ember.training.config.SFTJobConfig`),\n"
        "for `ember train` and `python -m train_jobs.sft --config ...`. `--set KEY=VALUE`\n"
        "(`--set train.max_steps=10`) or `EMBER_SFT_<KEY>__<KEY>` variables\n"
        "(`EMBER_SFT_TRAIN__MAX_STEPS=10`) override one key."),
    Section(
        "Sweep", "ember.tuning.config:SweepConfig",
        "A sweep config (`cluster/jobs/sweep-*.yaml`, `ember.tuning.config.SweepConfig`),\n"
        "for `ember tune` and `python -m tune.sweep --config ...`. The keys of\n"
        "`search_space` are dotted paths into the SFT job (`train.lr`, `method.lora.r`)."),
)

PREAMBLE = f"""# Configuration reference

<!-- Generated from the settings models' field descriptions; do not edit by hand.
     Regenerate: {REGENERATE} -->

Every Ember entry point reads one typed settings model (pydantic), from YAML
files in `cluster/`. Unknown keys are errors that name the key; every YAML in
`cluster/` is validated by the tests. Keys of nested sections are written with
dots (`engine.max_model_len` is `max_model_len` under `engine:`); `[]` marks a
list of sections and `<path>` a key you choose.

Environment: `EMBER_HOME` (models, data, run state; default `~/.cache/ember`),
`EMBER_URL` (the service for `ember chat`, default `http://127.0.0.1:8000`),
`EMBER_API_KEY` (the key clients send; default: the local admin key).
"""


def documented_models() -> list[tuple[Section, type[BaseModel]]]:
    """Each section with its model class (imported here: upper layers load only on demand)."""
    result = []
    for section in SECTIONS:
        module, name = section.model_path.split(":")
        result.append((section, getattr(importlib.import_module(module), name)))
    return result


def rows(model: type[BaseModel], prefix: str = "") -> list[Row]:
    """One row per field of `model`, nested models flattened into dotted keys."""
    result = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        result.append(Row(key, type_name(field), default_text(field), field.description or ""))
        nested, suffix = _nested_model(field.annotation)
        if nested is not None:
            result.extend(rows(nested, f"{key}{suffix}."))
    return result


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model a field holds (directly, optionally, in a list or as mapping values)."""
    for arg in _union_args(annotation):
        if _is_model(arg):
            return arg, ""
        origin, args = typing.get_origin(arg), typing.get_args(arg)
        if origin is list and args and _is_model(args[0]):
            return args[0], "[]"
        if origin is dict and len(args) == 2 and _is_model(args[1]):
            return args[1], ".<path>"
    return None, ""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def type_name(field: FieldInfo) -> str:
    """The field's type as a YAML writer reads it, with its bounds (`int >= 1`)."""
    text = " or ".join(_type_text(arg) for arg in _union_args(field.annotation))
    bounds = [_bound_text(m) for m in field.metadata]
    return ", ".join([text, *(b for b in bounds if b)])


def _type_text(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if _is_model(annotation):
        return "section"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " / ".join(str(a) for a in args)
    if origin is list:
        return f"list of {_plural(_type_text(args[0]))}" if args else "list"
    if origin is dict:
        value = args[1] if args else Any
        return "mapping" if value is Any else f"mapping of {_plural(_type_text(value))}"
    return getattr(annotation, "__name__", str(annotation))


def _plural(text: str) -> str:
    return "sections" if text == "section" else text


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >=",
           "max_length": "length <=", "pattern": "matching"}


def _bound_text(meta: Any) -> str:
    parts = []
    for attr, word in _BOUNDS.items():
        value = getattr(meta, attr, None)
        if value is not None:
            parts.append(f"{word} `{value}`" if attr == "pattern" else f"{word} {value}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        return f"{len(value)} with the defaults below"
    return f"`{_yaml_value(value)}`"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section_markdown(section: Section, model: type[BaseModel]) -> str:
    lines = [f"## {section.title}", "", section.intro, "",
             "| key | type | default | description |", "|---|---|---|---|"]
    for row in rows(model):
        cells = (f"`{row.key}`", row.type, row.default, row.description)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The whole reference, as committed in docs/configuration.md."""
    parts = [PREAMBLE, *(section_markdown(s, m) for s, m in documented_models())]
    return "\n".join(parts)


def main() -> None:
    print(reference_markdown(), end="")


if __name__ == "__main__":
    main()
