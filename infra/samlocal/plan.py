"""What `sam local invoke` would do with each event of events/, computed by the SAM CLI.

For every function of template.yaml, the environment `sam local invoke --env-vars
events/env.json` gives it is computed by the SAM CLI's own code (the pinned one): the
template's declared variables (intrinsics resolved as sam local resolves them), the shell's
value of a declared variable, then env.json's entries, and nothing else. A clean shell is
assumed (this script drops its own environment from that layer), as in CI.

It also checks what the check needs to be a proof:
  - every HttpApi route, SQS source and schedule of the template has an event in
    events/manifest.json, served by the function the template routes it to;
  - every variable events/env.json sets is one the template declares for that function
    (sam local would drop the others without a word);
  - every secret a function reads from `X_PARAM` is declared beside it as `X` (empty), so
    that a local invoke can set it.

Prints the plan as JSON for the runner (`sam-local-check`): per event, the function's
binary and environment with the Docker host name mapped to the emulator on loopback.

    plan.py --emulator http://127.0.0.1:PORT > plan.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER_HOST_EMULATOR = "http://host.docker.internal:4566"
# Files the provided.al2023 image has where this machine may keep them elsewhere: the TLS
# roots the template's SSL_CERT_FILE names (the SDK's client refuses to start without them).
CONTAINER_FILES = {
    "/etc/pki/tls/certs/ca-bundle.crt": ["/etc/pki/tls/certs/ca-bundle.crt",
                                         "/etc/ssl/certs/ca-certificates.crt"],
}


def host_file(container_path):
    for candidate in CONTAINER_FILES[container_path]:
        if Path(candidate).exists():
            return candidate
    raise SystemExit(f"plan.py: none of {CONTAINER_FILES[container_path]} exists on this machine")


def load():
    os.environ.setdefault("SAM_CLI_TELEMETRY", "0")
    from samcli.commands.local.cli_common.invoke_context import InvokeContext
    from samcli.commands.local.lib.local_lambda import LocalLambdaRunner
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
    from samcli.yamlhelper import yaml_parse

    template_file = str(ROOT / "template.yaml")
    stacks, _ = SamLocalStackProvider.get_stacks(template_file)
    provider = SamFunctionProvider(stacks)
    env_vars = InvokeContext._get_env_vars_value(str(ROOT / "events" / "env.json"))
    runner = LocalLambdaRunner(
        local_runtime=None,
        function_provider=provider,
        cwd=str(ROOT),
        real_path=str(ROOT),
        env_vars_values=env_vars,
    )
    raw = yaml_parse((ROOT / "template.yaml").read_text())
    return provider, runner, env_vars, raw


def resolved_env(runner, function):
    # sam local reads declared variables from the shell too; a person's clean shell has
    # none of ours, and this script's own (PATH, AWS_* of the test run) must not leak in.
    saved = dict(os.environ)
    os.environ.clear()
    try:
        return runner._make_env_vars(function).resolve()
    finally:
        os.environ.update(saved)


def template_triggers(raw):
    """(function, trigger) for every event of every function: `GET /v1/me` for a route,
    the event's name (`Generations`) for the others."""
    found = []
    for name, resource in raw.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event_name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            kind = event.get("Type")
            props = event.get("Properties", {})
            if kind == "HttpApi":
                found.append((name, f"{props['Method'].upper()} {props['Path']}", kind))
            else:
                found.append((name, event_name, kind))
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--emulator", required=True, help="the emulator's loopback URL")
    args = parser.parse_args()

    provider, runner, env_vars, raw = load()
    manifest = json.loads((ROOT / "events" / "manifest.json").read_text())
    problems = []

    functions = {}
    for function in provider.get_all():
        declared = set((function.environment or {}).get("Variables", {}) or {})
        given = set(env_vars.get(function.name, {}))
        for extra in sorted(given - declared):
            problems.append(f"events/env.json sets {extra} for {function.name}, which the template "
                            "does not declare for it: sam local would drop it")
        for var in sorted(declared):
            if var.endswith("_PARAM") and var[: -len("_PARAM")] not in declared:
                problems.append(f"{function.name} reads {var[:-6]} from {var} but does not declare "
                                f"{var[:-6]} (empty) beside it: a local invoke could not set it")
        env = resolved_env(runner, function)
        mapped = {}
        for k, v in env.items():
            v = v.replace(DOCKER_HOST_EMULATOR, args.emulator).replace("host.docker.internal", "127.0.0.1")
            mapped[k] = host_file(v) if v in CONTAINER_FILES else v
        functions[function.name] = {
            "binary": (function.metadata or {}).get("Binary"),
            "build_method": (function.metadata or {}).get("BuildMethod"),
            "env": dict(sorted(mapped.items())),
        }

    events = manifest["events"]
    for function, trigger, kind in template_triggers(raw):
        servers = [e for e in events if e.get("trigger") == trigger or e.get("route") == trigger]
        if not servers:
            problems.append(f"{function}'s {kind} event {trigger} has no event in events/manifest.json")
        for e in servers:
            if e["function"] != function:
                problems.append(f"events/{e['file']} is for {trigger}, which {function} serves, not {e['function']}")
    for e in events:
        if e["function"] not in functions:
            problems.append(f"events/{e['file']} names {e['function']}, not a function of the template")
        if not (ROOT / "events" / e["file"]).exists():
            problems.append(f"events/{e['file']} is in the manifest but missing")

    if problems:
        for p in problems:
            print(f"plan.py: {p}", file=sys.stderr)
        return 1
    json.dump({
        "emulator": args.emulator,
        "mapped": "; ".join([f"{DOCKER_HOST_EMULATOR} -> {args.emulator}"]
                            + [f"{c} -> {host_file(c)}" for c in CONTAINER_FILES if host_file(c) != c]),
        "placeholders": manifest["placeholders"],
        "functions": functions,
        "events": events,
    }, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
