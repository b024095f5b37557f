#!/usr/bin/env python3
"""Turns a CRD's openAPIV3Schema into a JSON Schema for check-jsonschema.

Usage: crd_schema.py CRD.yaml VERSION OUT.json

The result validates whole objects (apiVersion, kind, metadata, spec, status) the way
`kubectl apply` with strict field validation would: an unknown field anywhere is an error
(the apiserver would reject it, or prune it silently in a structural schema), and
`nullable: true` allows null. CEL rules (x-kubernetes-validations) are not evaluated here.
"""

import json
import sys

import yaml


def convert(node):
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: convert(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("type") in ("object", ["object", "null"]) and "properties" in out \
            and "additionalProperties" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    # int32/int64 are OpenAPI formats JSON Schema does not know; drop them rather than guess.
    if out.get("format") in ("int32", "int64", "double", "float"):
        out.pop("format")
    return out


def main():
    crd_path, version, out_path = sys.argv[1:4]
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = convert(ver["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    with open(out_path, "w") as f:
        json.dump(schema, f, indent=1)


if __name__ == "__main__":
    main()
