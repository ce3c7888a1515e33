#!/usr/bin/env python3
"""Prints a compact, line-per-fact index of an OpenAPI document: its operations and every
schema's type, required list, enum, default and fields. ContractTests compares the committed
index of Cloud Hypervisor's document with docs/api/cloud-hypervisor-swift.yaml, so the test needs
neither PyYAML nor Cloud Hypervisor's tree.

Usage: openapi_index.py DOCUMENT.yaml [LABEL]   (DOCUMENT may be - for standard input)

To regenerate the fixture from a Cloud Hypervisor clone:
  git -C <cloud-hypervisor> show v53.0:vmm/src/api/openapi/cloud-hypervisor.yaml \
    | python3 Scripts/api-fuzz/openapi_index.py - "Cloud Hypervisor v53.0" \
    > Tests/CloudHypervisorAPITests/Fixtures/ch-v53.0-openapi-index.txt

Lines (fields separated by one tab; an empty value is written as -):
  path    <path> <method> <request body schema> <2xx response schema>
  schema  <name> <type> <required, comma-separated> <enum, |-separated> <default as JSON>
  field   <schema> <field> <type> <default as JSON> <deprecated: true or ->
A field's type is its $ref's schema name (or that of the one $ref in its allOf), or its type
with /format appended, and array<...> around its items' type. `nullable` is not indexed: Cloud
Hypervisor's document never says which fields take null; ours marks those that are Option in
its decoder. Needs PyYAML (Debian: python3-yaml).
"""
import json
import sys

import yaml

REF_PREFIX = "#/components/schemas/"


def value(text):
    """A cell: `-` when empty, and never a tab or newline."""
    text = "-" if text is None or text == "" else str(text)
    return text.replace("\t", " ").replace("\n", " ")


def json_default(node):
    if "default" not in node:
        return None
    return json.dumps(node["default"], separators=(",", ":"))


def type_of(node):
    if "$ref" in node:
        return node["$ref"].removeprefix(REF_PREFIX)
    # OpenAPI 3.0 ignores keys beside a $ref, so a nullable reference is written
    # `type: object, nullable: true, allOf: [{$ref: ...}]`; its type is still the referenced schema.
    all_of = node.get("allOf", [])
    if len(all_of) == 1 and "$ref" in all_of[0]:
        return all_of[0]["$ref"].removeprefix(REF_PREFIX)
    kind = node.get("type", "")
    if kind == "array":
        return f"array<{type_of(node.get('items', {}))}>"
    if "format" in node:
        kind += "/" + str(node["format"])
    return kind


def body_schema(content_holder):
    for media in (content_holder or {}).get("content", {}).values():
        schema = media.get("schema", {})
        return type_of(schema)
    return None


def index(document):
    lines = []
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            success = None
            for code, response in sorted(operation.get("responses", {}).items(), key=lambda kv: str(kv[0])):
                if str(code).startswith("2") and success is None:
                    success = body_schema(response)
            request = body_schema(operation.get("requestBody"))
            lines.append(["path", path, method, value(request), value(success)])
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines.append([
            "schema", name, value(schema.get("type")),
            value(",".join(schema.get("required", []))),
            value("|".join(str(v) for v in schema.get("enum", []))),
            value(json_default(schema)),
        ])
        for field, node in schema.get("properties", {}).items():
            lines.append([
                "field", name, field, value(type_of(node)), value(json_default(node)),
                "true" if node.get("deprecated") else "-",
            ])
    return lines


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    source = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8")
    label = sys.argv[2] if len(sys.argv) == 3 else sys.argv[1]
    document = yaml.safe_load(source)
    print(f"# OpenAPI index of {label}, made by Scripts/api-fuzz/openapi_index.py; see its header for the format.")
    for line in index(document):
        print("\t".join(line))


if __name__ == "__main__":
    main()
