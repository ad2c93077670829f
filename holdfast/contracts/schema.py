"""Checking and compiling a contract's JSON Schemas (Draft 2020-12).

A schema is accepted at register time only if it is a JSON object, valid against the Draft
2020-12 meta-schema (``jsonschema``, whose messages say where), within the size and depth
limits, every ``$ref``/``$dynamicRef`` in it points inside the document itself (a remote or
dangling reference is refused: the sidecar never fetches anything while validating), and the
request-path validator compiles.

The request path validates with ``jsonschema-rs`` (Rust; Draft 2020-12): the pure-Python
``jsonschema`` interprets the schema on every call (a validator object per keyword descent and a
``$ref`` lookup per array item), ~6.5 ms for a 60-field instance with arrays through ``$ref``,
against ~40 µs compiled (bench/contracts.py). Validators run offline: even a record that
slipped past admission cannot make one reach the network. Patterns are ECMA-262 regular
expressions there (digit and word classes are ASCII only), with a backtracking limit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from referencing import Registry

# Both schemas travel in one configsvc request (its own body limit) and one etcd record.
MAX_SCHEMA_BYTES: Final = 28 * 1024
MAX_SCHEMA_DEPTH: Final = 16
DOCUMENT_URI: Final = "urn:holdfast:contract"
REF_KEYWORDS: Final = ("$ref", "$dynamicRef")
MAX_ERRORS_REPORTED: Final = 3


class SchemaProblem(ValueError):
    """A schema that cannot be a contract's; the message says which rule it breaks and where."""


def canonical(value: Any) -> bytes:
    """The one byte form used for hashing and comparing JSON documents."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(document: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(document)).hexdigest()


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_SCHEMA_DEPTH:
                return depth
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _refs(value: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key in REF_KEYWORDS and isinstance(child, str):
                yield path, child
            else:
                yield from _refs(child, f"{path}/{key}")
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _refs(child, f"{path}/{i}")


def _registry(schema: Mapping[str, Any]) -> Registry[Any]:
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, DRAFT202012.create_resource(schema)
    )
    return registry


def check_schema(schema: Any, *, what: str, object_args: bool = False) -> dict[str, Any]:
    """Return ``schema`` if it may be a contract's, else raise SchemaProblem saying why.

    ``object_args``: the schema describes tool arguments, which are always a JSON object
    (OpenAI's ``function.parameters``), so it must say ``"type": "object"``.
    """
    if not isinstance(schema, dict):
        raise SchemaProblem(f"{what} must be a JSON object, not {type(schema).__name__}")
    size = len(canonical(schema))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaProblem(f"{what} is {size} bytes; the limit is {MAX_SCHEMA_BYTES}")
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise SchemaProblem(f"{what} nests deeper than {MAX_SCHEMA_DEPTH} levels")
    # Imported here: the Python jsonschema package is ~4 MB resident, and a sidecar whose
    # agent has no contracts never checks a schema (jsonschema_rs validates on the path).
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from referencing.exceptions import Unresolvable

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        msg = f"{what} is not valid JSON Schema 2020-12 at {where}: {exc.message}"
        raise SchemaProblem(msg) from exc
    if "$schema" in schema and "2020-12" not in str(schema["$schema"]):
        raise SchemaProblem(f"{what} declares $schema {schema['$schema']!r:.100}; use 2020-12")
    resolver = _registry(schema).resolver(DOCUMENT_URI)
    for path, ref in _refs(schema):
        if not ref.startswith("#"):
            raise SchemaProblem(
                f"{what} has a remote $ref {ref!r:.100} at {path}; only references inside the "
                "document (#/$defs/...) are allowed"
            )
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise SchemaProblem(
                f"{what} has a $ref {ref!r:.100} at {path} that points nowhere in the document"
            ) from exc
    if object_args and schema.get("type") != "object":
        raise SchemaProblem(f'{what} must describe a JSON object ("type": "object")')
    try:
        CompiledSchema(schema)
    except ValueError as exc:  # e.g. a pattern that is not an ECMA-262 regular expression
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchemaProblem(f"{what} cannot be compiled: {first:.200}") from exc
    return schema


class CompiledSchema:
    """One schema compiled once; ``errors`` is cheap when the instance is valid (the common
    case: one ``is_valid`` pass) and collects readable errors only when it is not."""

    __slots__ = ("_validator",)

    def __init__(self, schema: Mapping[str, Any]) -> None:
        # Imported here: jsonschema_rs is ~6.5 MB resident (Rust code and tables), and a
        # sidecar whose agent has no contracts never compiles a schema.
        import jsonschema_rs

        self._validator = jsonschema_rs.Draft202012Validator(
            dict(schema),
            validate_formats=False,  # 2020-12: "format" is an annotation unless asked for
            offline=True,  # no retrieval at all: a remote $ref fails to compile
        )

    def is_valid(self, instance: Any) -> bool:
        try:
            return self._validator.is_valid(instance)
        except (ValueError, TypeError, RecursionError):
            return False

    def errors(self, instance: Any) -> list[str]:
        """Up to MAX_ERRORS_REPORTED readable errors (path: message); [] when valid."""
        try:
            if self._validator.is_valid(instance):
                return []
            found: list[str] = []
            for error in self._validator.iter_errors(instance):
                where = "/".join(str(p) for p in error.instance_path) or "(root)"
                found.append(f"{where}: {error.message[:200]}")
                if len(found) >= MAX_ERRORS_REPORTED:
                    break
        except (ValueError, TypeError, RecursionError) as exc:
            # An instance the validator cannot take (nested too deep, not JSON data).
            return [f"(root): cannot be checked: {str(exc)[:200]}"]
        return found or ["(root): does not match the schema"]


def compile_validator(schema: Mapping[str, Any]) -> CompiledSchema:
    return CompiledSchema(schema)


def first_errors(validator: CompiledSchema, instance: Any) -> list[str]:
    """Up to MAX_ERRORS_REPORTED readable errors (path: message), best first; [] when valid."""
    return validator.errors(instance)
