"""Code generation is injection-proof: schema text reaches Python only as literals.

Every doc, default and name of a corpus of hostile schemas is turned into a module, the
module is imported, and nothing injected runs: a canary file is never written, and the
strings come back intact (the docstring is the doc, the default is the default). Names
that cannot be identifiers are refused with SchemaError.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from choreo.avro import load_directory
from choreo.avro.codegen import generate_module
from choreo.errors import SchemaError

CANARY = "choreo_codegen_canary"


def payloads(canary: Path) -> list[str]:
    """Return texts that would run code if pasted into Python source unescaped."""
    act = f"open({str(canary)!r}, 'w').write('pwned')"
    return [
        f'"""\n{act}\n"""',
        f"'''\n{act}\n'''",
        f'"\n{act}\n"',
        f"'\n{act}\n'",
        f'\\"""; {act}; """',
        f'\\\\"""; {act}; x = """',
        f"\\'; {act}; '",
        f"\r{act}\r",
        f"\u2028{act}\u2029",
        f"# {act}",
        f"}}; {act}; {{",
        f"{{{act}}}",
        f"\x00{act}",
        f"\\N{{LATIN SMALL LETTER A}}{act}",
        f"\\x41{act}\\u0041",
        f'")\n{act}\n("',
        f"`{act}`",
        f"{act} " * 40,
        '"' * 7 + act + "'" * 7,
        "\\",
        "\\\\",
        '"',
        "'",
    ]


def write_schema(root: Path, name: str, schema: Any) -> None:
    """Write one .avsc file."""
    path = root / f"{name}.v1.avsc"
    path.write_text(json.dumps(schema))


def import_source(path: Path, source: str) -> Any:
    """Write and import a generated module under a unique name."""
    path.write_text(source)
    name = f"generated_injection_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def hostile_schema(index: int, text: str) -> dict[str, Any]:
    """Return a record carrying ``text`` in every free-text place a schema has."""
    return {
        "type": "record",
        "name": f"Hostile{index}",
        "namespace": "inj",
        "doc": text,
        "fields": [
            {"name": "note", "type": "string", "default": text, "doc": text},
            {
                "name": "mode",
                "type": {
                    "type": "enum",
                    "name": f"Mode{index}",
                    "doc": text,
                    "symbols": ["A", "class", "None", "name"],
                },
                "default": "class",
                "doc": text,
            },
            {"name": "class", "type": ["null", "string"], "default": None, "doc": text},
            {"name": "stamp", "type": {"type": "long", "logicalType": text}, "default": 0},
            {"name": "ratio", "type": "double", "default": float("inf")},
        ],
    }


def test_injection_corpus_never_runs(tmp_path: Path) -> None:
    """Docs, defaults and logical types of every payload stay inert and come back intact."""
    canary = tmp_path / CANARY
    texts = payloads(canary)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for index, text in enumerate(texts):
        write_schema(schemas, f"Hostile{index}", hostile_schema(index, text))
    source = generate_module(load_directory(schemas), source_label=f'x"""; {texts[0]}')
    module = import_source(tmp_path / "generated.py", source)
    assert not canary.exists()
    for index, text in enumerate(texts):
        cls = getattr(module, f"Hostile{index}")
        normalized = " ".join(text.split())
        assert cls.__doc__.replace("\n", " ").split() == normalized.split()
        made = cls()
        assert made.note == text  # the default is the schema's string, exactly
        assert made.mode is getattr(module, f"Mode{index}").class_
        assert made.class_ is None
        assert made.ratio == float("inf")
    assert not canary.exists()


@pytest.mark.parametrize("name", ["None", "True", "class", "import", "lambda"])
def test_keyword_record_names_are_refused(tmp_path: Path, name: str) -> None:
    """A record name that is a Python keyword cannot become a class: SchemaError."""
    write_schema(
        tmp_path,
        name,
        {"type": "record", "name": name, "namespace": "inj", "fields": []},
    )
    with pytest.raises(SchemaError, match="not a usable Python identifier"):
        generate_module(load_directory(tmp_path))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "X;import os", "namespace": "inj", "fields": []},
        {"type": "record", "name": "X", "namespace": "inj;os", "fields": []},
        {
            "type": "record",
            "name": "X",
            "namespace": "inj",
            "fields": [{"name": "a)\nimport os\n(", "type": "string"}],
        },
        {
            "type": "record",
            "name": "X",
            "namespace": "inj",
            "fields": [
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A = 1; B"]}}
            ],
        },
    ],
    ids=["record-name", "namespace", "field-name", "enum-symbol"],
)
def test_names_that_are_not_identifiers_never_load(tmp_path: Path, schema: Any) -> None:
    """Names, namespaces, field names and symbols outside Avro's name syntax are refused."""
    write_schema(tmp_path, "X", schema)
    with pytest.raises(SchemaError):
        generate_module(load_directory(tmp_path))
