"""The sample events of events/ for `sam local invoke -e`, and what each must answer.

Every event starts from what `sam local generate-event` prints (run in-process through the
SAM CLI's own command, the pinned one of infra/requirements-build.txt), then takes our
route, headers and body. events/manifest.json records, for each file, the function that
serves it, the exact generate-event command, the edits, and the answer that
infra/sam-local-check.sh asserts.

    infra/.venv/bin/python infra/samlocal/events.py write   # regenerate events/
    infra/.venv/bin/python infra/samlocal/events.py check   # events/ is what this makes
    infra/.venv/bin/python infra/samlocal/events.py table   # the README's table of them

The order is the order the check invokes them in: a generation is created before the
worker gets its message, the session is revoked last.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

# Placeholders the check (and a person, with sed) replaces; invoked as they are, the events
# still get a well-formed answer (401 for the token, "not found" for the ids).
TOKEN = "REPLACE_WITH_TOKEN"
SAMPLE_GENERATION = "gen_01JAAAAAAAAAAAAAAAAAAAAAAA"
SAMPLE_USER = "usr_01JAAAAAAAAAAAAAAAAAAAAAAA"
SAMPLE_KEY = "key_01JAAAAAAAAAAAAAAAAAAAAAAA"
# The buyer the payment samples name: no user of any stack, and not a placeholder (the
# check must not touch a signed body).
UNKNOWN_BUYER = "usr_01JBBBBBBBBBBBBBBBBBBBBBBB"

# events/env.json's dev-only Creem secret: the Creem webhook sample is signed with it
# (Creem signs no timestamp, so the signature stays valid).
CREEM_WEBHOOK_SECRET = "DEV-ONLY-creem-webhook-secret-never-deploy-0123"

HOST = "id.execute-api.us-east-1.amazonaws.com"  # the domain generate-event prints
SOURCE_IP = "203.0.113.10"  # a documentation address; generate-event's "192.168.0.1/32" is a CIDR
USER_AGENT = "curl/8.5.0"
APP_ORIGIN = "http://localhost:5173"  # events/env.json's APP_ORIGINS

HTTP_EDITS = (
    "routeKey set to the route; headers, cookies, query and pathParameters replaced by ours; "
    "stageVariables and the JWT authorizer / mTLS context removed (this API has none); "
    "sourceIp a plain address; a JSON body as API Gateway sends one (text, isBase64Encoded false)"
)


def http(file, function, method, route, *, params=None, query="", body=None, token=False,
         headers=None, expect, revokes_session=False, note=None):
    """An API Gateway HTTP API (v2) request for one route of template.yaml."""
    path = route
    for name, value in (params or {}).items():
        path = path.replace("{" + name + "}", value)
    text = "" if body is None else (body if isinstance(body, str) else json.dumps(body, separators=(",", ":")))
    args = ["apigateway", "http-api-proxy", "--method", method, "--path", path.lstrip("/"), "--body", text]
    return {
        "file": file,
        "function": function,
        "route": f"{method} {route}",
        "args": args,
        "edit": ("http", {"method": method, "route": route, "params": params or {}, "query": query,
                          "body": None if body is None else text, "token": token,
                          "headers": headers or {}}),
        "expect": expect,
        "session": token,
        "revokes_session": revokes_session,
        "note": note,
    }


def sqs(file, trigger, queue, body, *, expect, note=None):
    """An SQS batch of one record from `queue` (the main queue or the DLQ), for the
    template's WorkerFunction event `trigger`; `body=None` keeps generate-event's own sample."""
    if body is None:
        args = ["sqs", "receive-message"]
    else:
        text = json.dumps(body, separators=(",", ":"))
        # generate-event puts --body into the JSON text as it is: quotes must come escaped.
        escaped = text.replace('"', '\\"')
        args = ["sqs", "receive-message", "--queue-name", queue, "--body", escaped]
    return {
        "file": file,
        "function": "WorkerFunction",
        "source": f"SQS {queue}",
        "trigger": trigger,
        "args": args,
        "edit": ("none", {}),
        "expect": expect,
        "session": False,
        "revokes_session": False,
        "note": note,
    }


def schedule(file, trigger, rule, *, expect, note=None, function="WorkerFunction",
             rate="rate(1 minute)"):
    return {
        "file": file,
        "function": function,
        "source": f"Schedule {rate}",
        "trigger": trigger,
        "args": ["cloudwatch", "scheduled-event", "--rule", rule],
        "edit": ("none", {}),
        "expect": expect,
        "session": False,
        "revokes_session": False,
        "note": note,
    }


def creem_checkout_completed():
    """A Creem test-mode one-time purchase for a user this stack does not know: stored for
    an operator (`nb-admin events`) and answered 200, however often it is invoked."""
    return {
        "id": "evt_sam_local_creem_1",
        "eventType": "checkout.completed",
        "created_at": 1735732800000,
        "object": {
            "id": "ch_sam_local_1", "object": "checkout", "request_id": "chk_sam_local_1",
            "status": "completed", "mode": "test",
            "order": {"id": "ord_sam_local_1", "object": "order", "customer": "cust_sam_local",
                      "product": "prod_credits_100", "amount": 999, "amount_paid": 999,
                      "currency": "USD", "status": "paid", "type": "onetime", "mode": "test"},
            "product": {"id": "prod_credits_100", "object": "product", "price": 999,
                        "currency": "USD", "billing_type": "onetime", "mode": "test"},
            "customer": {"id": "cust_sam_local", "object": "customer",
                         "email": "buyer@example.com", "mode": "test"},
            "metadata": {"user_id": UNKNOWN_BUYER, "product_id": "credits_100"},
        },
    }


def stripe_checkout_completed():
    return {
        "id": "evt_sam_local_stripe_1", "object": "event", "type": "checkout.session.completed",
        "created": 1735732800,
        "data": {"object": {
            "object": "checkout.session", "mode": "payment", "payment_status": "paid",
            "client_reference_id": UNKNOWN_BUYER, "customer": "cus_sam_local",
            "payment_intent": "pi_sam_local_1", "amount_total": 999, "currency": "usd",
            "metadata": {"user_id": UNKNOWN_BUYER, "product_id": "credits_100"}}},
    }


def problem(status, code):
    return {"status": status, "code": code}


def spec():
    creem_body = json.dumps(creem_checkout_completed(), separators=(",", ":"))
    creem_sig = hmac.new(CREEM_WEBHOOK_SECRET.encode(), creem_body.encode(), hashlib.sha256).hexdigest()
    stripe_body = json.dumps(stripe_checkout_completed(), separators=(",", ":"))
    return [
        # --- auth ---------------------------------------------------------------------
        http("apigw-v2-post-dev-login.json", "AuthFunction", "POST", "/auth/dev/login",
             body={"email": "ada@example.com", "name": "Ada"}, expect={"status": 200},
             note="AUTH_DEV_LOGIN=1 (events/env.json); the answer's token is what REPLACE_WITH_TOKEN stands for"),
        http("apigw-v2-get-auth-providers.json", "AuthFunction", "GET", "/auth/providers", expect={"status": 200},
             note="the sign-in providers that work here (env.json's dev Google client)"),
        http("apigw-v2-get-auth-login.json", "AuthFunction", "GET", "/auth/{provider}/login",
             params={"provider": "google"}, query=f"redirect_to={APP_ORIGIN}/", expect={"status": 302},
             note="a 302 to Google with PKCE and the nb_oauth cookie (env.json's dev-only Google client)"),
        http("apigw-v2-get-auth-callback.json", "AuthFunction", "GET", "/auth/{provider}/callback",
             params={"provider": "google"}, query="code=sample-code&state=sample-state",
             expect=problem(400, "invalid_request"),
             note="no nb_oauth cookie, so the state cannot be checked: refused before any call to Google"),
        http("apigw-v2-post-google-one-tap.json", "AuthFunction", "POST", "/auth/google/one-tap",
             body={"credential": "not-a-google-id-token"}, expect=problem(400, "invalid_request"),
             note="not a JWT: refused before Google's keys are fetched"),
        http("apigw-v2-get-me.json", "AuthFunction", "GET", "/v1/me", token=True,
             expect={"status": 200, "json": {"email": "ada@example.com"}}),
        http("apigw-v2-get-ledger.json", "AuthFunction", "GET", "/v1/me/ledger", token=True,
             query="limit=20", expect={"status": 200}),
        http("apigw-v2-post-api-key.json", "AuthFunction", "POST", "/v1/api-keys", token=True,
             body={"name": "sam local"}, expect={"status": 201, "json": {"name": "sam local"}},
             note="the check takes this key's id for the revoke below"),
        http("apigw-v2-list-api-keys.json", "AuthFunction", "GET", "/v1/api-keys", token=True,
             expect={"status": 200}),
        http("apigw-v2-delete-api-key.json", "AuthFunction", "DELETE", "/v1/api-keys/{id}", token=True,
             params={"id": SAMPLE_KEY}, expect={"status": 204}),
        http("apigw-v2-get-webhook-secret.json", "AuthFunction", "GET", "/v1/webhook-secret", token=True,
             expect={"status": 200}),
        http("apigw-v2-post-webhook-secret-rotate.json", "AuthFunction", "POST", "/v1/webhook-secret/rotate",
             token=True, expect={"status": 200}),
        http("apigw-v2-get-security-log.json", "AuthFunction", "GET", "/v1/me/security-log", token=True,
             query="limit=20", expect={"status": 200},
             note="the API key made and revoked and the webhook secret made and rotated above are in it"),
        # --- generate -----------------------------------------------------------------
        http("apigw-v2-get-models.json", "GenerateFunction", "GET", "/v1/models", expect={"status": 200}),
        http("apigw-v2-post-upload.json", "GenerateFunction", "POST", "/v1/uploads", token=True,
             body={"content_type": "image/png", "size_bytes": 1024}, expect={"status": 201}),
        http("apigw-v2-post-generation.json", "GenerateFunction", "POST", "/v1/generations", token=True,
             body={"model": "nano-banana", "prompt": "a lighthouse at dusk"},
             expect={"status": 202, "json": {"status": "queued", "cost": 2}},
             note="the check takes this generation's id and user for the events below"),
        # --- worker: the queue, the DLQ, the schedule ---------------------------------
        sqs("sqs-generation.json", "Generations", "nb-local-generations",
            {"generation_id": SAMPLE_GENERATION, "user_id": SAMPLE_USER},
            expect={"batchItemFailures": []},
            note="from the generation queue: the worker makes the image with the built-in renderer"),
        sqs("sqs-hello.json", "Generations", "MyQueue", None, expect={"batchItemFailures": []},
            note="generate-event's own sample, unchanged: a body that is no job is acknowledged, not retried"),
        http("apigw-v2-get-generation.json", "GenerateFunction", "GET", "/v1/generations/{id}", token=True,
             params={"id": SAMPLE_GENERATION}, expect={"status": 200, "json": {"status": "succeeded"}}),
        http("apigw-v2-post-cancel-generation.json", "GenerateFunction", "POST", "/v1/generations/{id}/cancel",
             token=True, params={"id": SAMPLE_GENERATION}, expect=problem(409, "not_cancelable"),
             note="already succeeded: nothing to cancel"),
        sqs("sqs-hooks.json", "Hooks", "nb-local-hooks",
            {"user_id": SAMPLE_USER, "generation_id": SAMPLE_GENERATION, "event": "completed"},
            expect={"batchItemFailures": []},
            note="from the completion-webhook queue: this generation asked for no webhook, so there is nothing to send"),
        http("apigw-v2-list-generations.json", "GenerateFunction", "GET", "/v1/generations", token=True,
             query="limit=20", expect={"status": 200}),
        http("apigw-v2-delete-generation.json", "GenerateFunction", "DELETE", "/v1/generations/{id}",
             token=True, params={"id": SAMPLE_GENERATION}, expect={"status": 204}),
        sqs("sqs-dlq.json", "DeadLetters", "nb-local-generations-dlq",
            {"generation_id": SAMPLE_GENERATION, "user_id": SAMPLE_USER},
            expect={"batchItemFailures": []},
            note="from the DLQ: a generation still open is finished and refunded; one already gone is acknowledged"),
        schedule("schedule.json", "Sweeper", "nano-banana-pro-ai-WorkerFunctionSweeper", expect={"response": True},
                 note="the one-minute sweep"),
        schedule("schedule-deletion-sweep.json", "Sweep",
                 "nano-banana-pro-ai-AccountDeletionSweepFunctionSweep", expect={"response": True},
                 function="AccountDeletionSweepFunction", rate="rate(5 minutes)",
                 note="the deletion sweep: finishes account deletions whose request died"),
        # --- payments -----------------------------------------------------------------
        http("apigw-v2-get-products.json", "WebhookFunction", "GET", "/v1/products", expect={"status": 200}),
        http("apigw-v2-post-checkout.json", "WebhookFunction", "POST", "/v1/checkout", token=True,
             body={"product_id": "credits_100", "provider": "stripe"},
             headers={"origin": APP_ORIGIN}, expect=problem(503, "unavailable"),
             note="Stripe has no key in env.json (a checkout would call Stripe): 503, nothing charged"),
        http("apigw-v2-post-billing-portal.json", "WebhookFunction", "POST", "/v1/billing/portal",
             token=True, expect=problem(404, "not_found"), note="no subscription yet"),
        http("apigw-v2-post-webhook-stripe.json", "WebhookFunction", "POST", "/webhooks/stripe",
             body=stripe_body, headers={"stripe-signature": "t=1735732800,v1=" + "0" * 64},
             expect=problem(503, "unavailable"),
             note="Stripe is off in env.json; with its secrets set, this signature is refused (400)"),
        http("apigw-v2-post-webhook-creem.json", "WebhookFunction", "POST", "/webhooks/creem",
             body=creem_body, headers={"creem-signature": creem_sig},
             expect={"status": 200, "json": {"received": True}},
             note="signed with env.json's dev-only Creem secret; its user is unknown, so it is stored for nb-admin"),
        # --- the session ends ---------------------------------------------------------
        http("apigw-v2-post-logout.json", "AuthFunction", "POST", "/auth/logout", token=True,
             expect={"status": 204}, revokes_session=True),
        http("apigw-v2-delete-me.json", "AuthFunction", "DELETE", "/v1/me", token=True,
             expect={"status": 204}, revokes_session=True),
    ]


def command(args):
    return "sam local generate-event " + " ".join(shlex.quote(a) for a in args)


def generate(runner, cli, args):
    result = runner.invoke(cli, ["local", "generate-event", *args])
    if result.exit_code != 0:
        raise SystemExit(f"{command(args)} failed:\n{result.output}")
    return json.loads(result.output)


def apply_http(event, edit):
    method, route, query = edit["method"], edit["route"], edit["query"]
    route_key = f"{method} {route}"
    event["routeKey"] = route_key
    event["requestContext"]["routeKey"] = route_key
    event.pop("cookies", None)
    event.pop("stageVariables", None)
    event["requestContext"].pop("authorizer", None)
    event["requestContext"].pop("authentication", None)
    event["requestContext"]["http"]["sourceIp"] = SOURCE_IP
    event["requestContext"]["http"]["userAgent"] = USER_AGENT
    event["rawQueryString"] = query
    if query:
        pairs = [p.split("=", 1) for p in query.split("&")]
        event["queryStringParameters"] = {k: v for k, v in pairs}
    else:
        event.pop("queryStringParameters", None)
    if edit["params"]:
        event["pathParameters"] = dict(edit["params"])
    else:
        event.pop("pathParameters", None)
    headers = {
        "accept": "application/json",
        "host": HOST,
        "user-agent": USER_AGENT,
        "x-forwarded-for": SOURCE_IP,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    body = edit["body"]
    if body is not None:
        # What generate-event printed, decoded: API Gateway sends a JSON body as text.
        assert base64.b64decode(event["body"]).decode() == body
        event["body"] = body
        event["isBase64Encoded"] = False
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(body.encode()))
    else:
        event.pop("body", None)
        event["isBase64Encoded"] = False
    if edit["token"]:
        headers["authorization"] = f"Bearer {TOKEN}"
    headers.update(edit["headers"])
    event["headers"] = dict(sorted(headers.items()))
    return event


def build():
    """{file name: text} for every event and the manifest."""
    os.environ.setdefault("SAM_CLI_TELEMETRY", "0")
    from click.testing import CliRunner
    from samcli.cli.main import cli

    runner = CliRunner()
    files = {}
    manifest = []
    for entry in spec():
        event = generate(runner, cli, entry["args"])
        kind, edit = entry["edit"]
        if kind == "http":
            event = apply_http(event, edit)
        files[entry["file"]] = json.dumps(event, indent=2) + "\n"
        row = {"file": entry["file"], "function": entry["function"]}
        if "route" in entry:
            row["route"] = entry["route"]
        else:
            row["source"] = entry["source"]
            row["trigger"] = entry["trigger"]
        row["generated_by"] = command(entry["args"])
        row["edits"] = HTTP_EDITS if kind == "http" else "none"
        row["session"] = entry["session"]
        if entry["revokes_session"]:
            row["revokes_session"] = True
        row["expect"] = entry["expect"]
        if entry["note"]:
            row["note"] = entry["note"]
        manifest.append(row)
    files["manifest.json"] = json.dumps({
        "about": "Sample events for sam local invoke -e, in the order infra/sam-local-check.sh invokes "
                 "them, each with the command it started from and the answer the check asserts. "
                 f"{TOKEN} is a session token (the dev login's answer); the check also puts the "
                 f"generation it created in place of {SAMPLE_GENERATION} and {SAMPLE_USER}, and the API key "
                 f"it made in place of {SAMPLE_KEY}. "
                 "Regenerate with infra/samlocal/events.py write.",
        "placeholders": {"token": TOKEN, "generation": SAMPLE_GENERATION, "user": SAMPLE_USER,
                         "key": SAMPLE_KEY},
        "events": manifest,
    }, indent=2) + "\n"
    return files


def readme_table():
    """The README's table of events, commands and answers (`events.py table`)."""
    rows = ["| route or source | command | answer |", "|---|---|---|"]
    for e in spec():
        trigger = e.get("route") or e.get("source")
        expect = e["expect"]
        if "status" in expect:
            answer = str(expect["status"]) + (f" `{expect['code']}`" if "code" in expect else "")
        elif "batchItemFailures" in expect:
            answer = '`{"batchItemFailures": []}`'
        else:
            answer = "the sweep's counts"
        if e["session"]:
            command = (f'`sed "s/{TOKEN}/$TOKEN/" events/{e["file"]} \\| '
                       f'sam local invoke {e["function"]} -e - --env-vars events/env.json`')
        else:
            command = f'`sam local invoke {e["function"]} -e events/{e["file"]} --env-vars events/env.json`'
        rows.append(f"| {trigger} | {command} | {answer} |")
    return "\n".join(rows)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    if mode == "table":
        print(readme_table())
        return 0
    files = build()
    ours = {"env.json"}  # written by hand
    if mode == "write":
        for name in sorted(p.name for p in EVENTS.glob("*.json")):
            if name not in files and name not in ours:
                (EVENTS / name).unlink()
                print(f"removed events/{name}")
        for name, text in files.items():
            (EVENTS / name).write_text(text)
        print(f"wrote {len(files)} files to events/")
        return 0
    if mode == "check":
        stale = [n for n, t in files.items() if not (EVENTS / n).exists() or (EVENTS / n).read_text() != t]
        extra = [p.name for p in EVENTS.glob("*.json") if p.name not in files and p.name not in ours]
        if stale or extra:
            print("events/ is not what infra/samlocal/events.py makes: "
                  f"differs {stale}, unknown {extra}; run `infra/.venv/bin/python infra/samlocal/events.py write`",
                  file=sys.stderr)
            return 1
        readme = (ROOT / "README.md").read_text().splitlines()
        missing = [f"{e['function']} {e['file']}" for e in spec()
                   if not any(f"sam local invoke {e['function']}" in line and f"events/{e['file']}" in line
                              for line in readme)]
        if missing:
            print(f"README.md's sam local section lacks the command of {missing}", file=sys.stderr)
            return 1
        print(f"events/: {len(files) - 1} events match what sam local generate-event makes of them, "
              "and the README names the command of each")
        return 0
    print("usage: events.py write|check|table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
