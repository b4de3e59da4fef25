"""One source of defaults: the schemas. Method yamls state only what differs from their schema, the
composed configs equal the schema where the yaml is silent, and the README's key tables say the same."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from meal.methods.registry import method_class, method_classes
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[2]
METHOD_YAMLS = sorted((REPO / "conf" / "method").glob("*.yaml"))
TABLE_HEADING = re.compile(r"^### .* keys \(`method=(\w+)`\)$")


def _defaults(schema: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(schema):
        out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return out


def _yaml_method(path: Path) -> tuple[str, dict[str, Any]]:
    """The schema a method yaml extends and the values it states."""
    text = yaml.safe_load(path.read_text())
    (schema_ref,) = [d for d in text.pop("defaults") if d != "_self_"]
    return schema_ref.split("/")[-1].split("@")[0], text


@pytest.mark.parametrize("path", METHOD_YAMLS, ids=[p.stem for p in METHOD_YAMLS])
def test_a_method_yaml_states_only_what_differs_from_its_schema(path: Path) -> None:
    name, stated = _yaml_method(path)
    defaults = _defaults(method_class(name).schema)
    restated = {k: v for k, v in stated.items() if k in defaults and v == defaults[k]}
    assert restated == {}, f"{path.name} restates schema defaults: {restated}"
    assert set(stated) <= set(defaults), f"{path.name} sets keys its schema lacks: {set(stated) - set(defaults)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", METHOD_YAMLS, ids=[p.stem for p in METHOD_YAMLS])
def test_a_composed_method_is_its_schema_plus_its_yaml(path: Path) -> None:
    name, stated = _yaml_method(path)
    composed = OmegaConf.to_container(compose_config([f"method={path.stem}"]).method, resolve=True)
    assert composed == _defaults(method_class(name).schema) | stated


def _cell_values(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _parse(text: str, like: Any) -> Any:
    if like is None:
        return None if text == "null" else text
    if isinstance(like, bool):
        return {"true": True, "false": False}.get(text, text)
    if isinstance(like, (int, float)):
        return type(like)(float(text))
    if isinstance(like, list):
        return [float(v) if isinstance(like[0], float) else int(v) for v in yaml.safe_load(text)]
    return text


def _readme_tables() -> dict[str, dict[str, str]]:
    """``{method: {key: default as written}}`` from the README's "### ... keys (`method=...`)" tables."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in (REPO / "README.md").read_text().splitlines():
        heading = TABLE_HEADING.match(line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
        elif line.startswith("#"):
            current = None
        elif current is not None and line.startswith("| `"):
            cells = line.split(" | ")
            keys, values = _cell_values(cells[0]), _cell_values(cells[1])
            assert len(keys) == len(values), f"README row with {len(keys)} keys and {len(values)} defaults: {line}"
            current.update(zip(keys, values, strict=True))
    return tables


def test_the_readme_tables_give_every_method_key_with_the_schema_default() -> None:
    tables = _readme_tables()
    assert set(tables) == set(method_classes()), "one README key table per registered method"
    for name, cls in method_classes().items():
        defaults = {k: v for k, v in _defaults(cls.schema).items() if k != "name"}
        documented = tables[name]
        assert set(documented) == set(defaults), f"{name}: README keys differ from the schema's"
        wrong = {k: (documented[k], v) for k, v in defaults.items() if _parse(documented[k], v) != v}
        assert wrong == {}, f"{name}: README default (as written, schema) disagree: {wrong}"
