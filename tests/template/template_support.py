"""Shared by the template tests: template.yaml read the way CloudFormation reads it, and
transformed by the SAM translator (aws-sam-translator, the code `sam` and CloudFormation's
AWS::Serverless transform run)."""

from __future__ import annotations

import copy
import logging
import os
import re
from functools import cache
from pathlib import Path

# The translator logs feature-toggle and metrics chatter at warning level.
logging.getLogger("samtranslator").setLevel(logging.ERROR)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# Values for the parameters without a default (what `sam deploy --guided` asks for).
REQUIRED = {"AppOrigins": "https://app.example.com", "SessionSecretParam": "/nano-banana/test/session-secret"}


@cache
def source():
    """The template as written (intrinsics as {"Ref": ...} maps)."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


class _NoManagedPolicies:
    """The template names managed policies by ARN only, so no name needs looking up."""

    def load(self):
        return {}


def transformed(**parameters):
    """The CloudFormation template the SAM transform makes of template.yaml."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from samtranslator.translator.transform import transform

    values = {**REQUIRED, **parameters}
    template = copy.deepcopy(source())
    # What `sam package` / `sam deploy` does before the transform: code uploaded to S3.
    template["Globals"]["Function"]["CodeUri"] = "s3://nano-banana-artifacts/code.zip"
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"].pop("CodeUri", None)
    return transform(template, values, _NoManagedPolicies())


def of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def refs(value):
    """Every logical id a value refers to (Ref, Fn::GetAtt, ${...} in Fn::Sub); pseudo
    parameters (AWS::Region) left out."""
    return {r for r in _refs(value) if "::" not in r}


def _refs(value):
    found = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) else inner.split(".")[0]
                found.add(target)
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                found.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                if isinstance(inner, list):
                    found.update(_refs(inner[1]))
            else:
                found.update(_refs(inner))
    elif isinstance(value, list):
        for inner in value:
            found.update(_refs(inner))
    return found
