"""Schemathesis hooks for tests/schema.rs: credentials for every call the fuzzer makes.

People's endpoints get the bearer token in LEDGER_FUZZ_TOKEN. Calls to /v1/systems/{system}/...
are signed the way a legacy system signs them (docs/api.md, "Identity"): X-Ledger-Timestamp in
unix seconds and X-Ledger-Signature = v1=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>,
with the secret in LEDGER_FUZZ_SYSTEM_SECRET. The signature must cover the bytes actually sent,
so it is made as a `requests` auth, which sees the request after its body is encoded.

Schemathesis treats these credentials as explicit: its auth probes send the same call without
them, and with a made-up signature, and expect a 401.

A valid Idempotency-Key the fuzzer drew gets a unique suffix: drawn keys repeat ("0", "a") across
calls with different bodies, which the service rightly refuses (422 idempotency_key_reused), but
a real client sends a new key with every new call. tests/idempotency.rs covers the replays.

A submission the fuzzer means to be valid is made to keep the rules that span fields or that
JSON Schema cannot state (docs/api.md, "Submission rules"): the requester is no approver,
`at_least` is at most the step's approvers (unless the step names groups), a step names
approvers or groups, a step with groups is not `all`, `due_at` is in the future, a step's
`escalate_to` names no requester and comes with a `due_in`, and a `due_in` is longer than zero
and at most 366 days. Every other rule is in the schema, and the service must accept what that allows. A
resubmission keeps the same rules, and names the path's reference and the request's requester.
"""

import hashlib
import hmac
import os
import re
import time
import uuid
from collections.abc import MutableMapping
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import requests
import schemathesis
from hypothesis.internal import lambda_sources

TOKEN = os.environ["LEDGER_FUZZ_TOKEN"]
# The administrator's routes (/v1/admin/...) take an administrator's token, and so does the
# report (/v1/analytics/..., for auditors and administrators).
ADMIN_TOKEN = os.environ.get("LEDGER_FUZZ_ADMIN_TOKEN", TOKEN)
# Who LEDGER_FUZZ_TOKEN names.
FUZZ_USER = "alice"
SYSTEM_SECRET = os.environ["LEDGER_FUZZ_SYSTEM_SECRET"].encode()


def sign(timestamp: int, body: bytes) -> str:
    digest = hmac.new(SYSTEM_SECRET, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class LedgerAuth(requests.auth.AuthBase):
    """A bearer token for people's endpoints, a signature for the systems' ones."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if urlsplit(request.url).path.startswith("/v1/systems/"):
            body = request.body or b""
            if isinstance(body, str):
                body = body.encode()
            timestamp = int(time.time())
            request.headers["X-Ledger-Timestamp"] = str(timestamp)
            request.headers["X-Ledger-Signature"] = sign(timestamp, body)
        elif urlsplit(request.url).path.startswith(("/v1/admin/", "/v1/analytics/")):
            request.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        else:
            request.headers["Authorization"] = f"Bearer {TOKEN}"
        return request


schemathesis.auth.set_from_requests(LedgerAuth())

VALID_KEY = re.compile(r"[!-~]{1,128}")
# A step's due_in as the schema's pattern has it; its length must also be in (0, 366 days].
DUE_IN = re.compile(
    r"P(?:[0-9]+W|[0-9]+D(?:T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S))?"
    r"|T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S))"
)
UNIT = {"W": 7 * 86_400, "D": 86_400, "H": 3_600, "M": 60, "S": 1}


def keep_cross_field_rules(body: dict) -> None:
    """Makes a submission keep the rules that span fields, and touches nothing else, so a body
    that breaks the schema still breaks it."""
    requester = body.get("requester")
    for step in body.get("steps") if isinstance(body.get("steps"), list) else []:
        if not isinstance(step, dict):
            continue
        groups = step.get("groups")
        has_groups = isinstance(groups, list) and len(groups) > 0
        if has_groups and step.get("rule") == "all":
            step["rule"] = "any"
        if not has_groups and groups in (None, []) and step.get("approvers") in (None, []):
            step["approvers"] = ["fuzz-approver" if requester != "fuzz-approver" else "fuzz-other"]
        approvers = step.get("approvers")
        if approvers is not None and not isinstance(approvers, list):
            continue
        approvers = approvers if approvers is not None else []
        if isinstance(requester, str) and requester in approvers:
            stand_in = f"not-{requester}"[:128]
            approvers[:] = list(dict.fromkeys(stand_in if a == requester else a for a in approvers))
        escalate_to = step.get("escalate_to")
        if isinstance(escalate_to, list) and isinstance(requester, str) and requester in escalate_to:
            stand_in = f"not-{requester}"[:128]
            escalate_to[:] = list(dict.fromkeys(stand_in if a == requester else a for a in escalate_to))
        if isinstance(escalate_to, list) and escalate_to and step.get("due_in") is None:
            step["due_in"] = "PT8H"
        due_in = step.get("due_in")
        if isinstance(due_in, str) and DUE_IN.fullmatch(due_in):
            seconds = sum(int(n) * UNIT[u] for n, u in re.findall(r"([0-9]+)([WDHMS])", due_in.replace("T", "")))
            if not 0 < seconds <= 366 * 86_400:
                step["due_in"] = "PT8H"
        rule = step.get("rule")
        count = rule.get("at_least") if isinstance(rule, dict) else None
        whole = isinstance(count, (int, float)) and not isinstance(count, bool) and count == int(count)
        if whole and approvers and not has_groups and count > len(approvers):
            rule["at_least"] = len(approvers)
    due_at = body.get("due_at")
    if isinstance(due_at, str):
        try:
            due = datetime.fromisoformat(due_at)
        except ValueError:
            return
        now = datetime.now(timezone.utc)
        if due.tzinfo is not None and due <= now + timedelta(minutes=5):
            body["due_at"] = (now + timedelta(days=30)).isoformat()


def keep_absence_rules(body: dict) -> None:
    """Makes an absence keep the rules that span fields or depend on now: `until` after `from`
    and in the future, and a deputy who is not the caller."""
    if body.get("deputy") == FUZZ_USER:
        body["deputy"] = "not-alice"
    start, end = body.get("from"), body.get("until")
    if not (isinstance(start, str) and isinstance(end, str)):
        return
    try:
        start_at, end_at = datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError:
        return
    if start_at.tzinfo is None or end_at.tzinfo is None:
        return
    now = datetime.now(timezone.utc)
    if end_at <= max(start_at, now):
        try:
            body["until"] = (max(start_at, now) + timedelta(days=1)).isoformat()
        except OverflowError:
            body["from"] = now.isoformat()
            body["until"] = (now + timedelta(days=1)).isoformat()


def keep_reassign_rules(body: dict) -> None:
    """Makes a reassignment move someone else's places than alice's (the other operations
    decide her requests) to another person."""
    if body.get("from") == FUZZ_USER:
        body["from"] = "not-alice"
    source, target = body.get("from"), body.get("to")
    if isinstance(source, str) and source == target:
        body["to"] = f"{target[:120]}-other"


def moment(text):
    """`text` read as an RFC 3339 moment, or None."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def keep_window_rules(query: dict) -> None:
    """Makes a report's window run forwards: `from` is not after `to` (docs/api.md,
    "GET /v1/analytics/approvals"), a rule between two parameters that the schema cannot state."""
    start, end = moment(query.get("from")), moment(query.get("to"))
    if start is not None and end is not None and start > end:
        query["from"], query["to"] = query["to"], query["from"]


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers
    if isinstance(headers, MutableMapping):
        key = headers.get("Idempotency-Key")
        if isinstance(key, str) and VALID_KEY.fullmatch(key):
            headers["Idempotency-Key"] = f"{key[:95]}.{uuid.uuid4().hex}"
    # Drawn as negative or not, the body counts as valid once it fits the schema.
    submission = case.method.upper() == "POST" and case.path == "/v1/systems/{system}/requests"
    if submission and isinstance(case.body, dict):
        keep_cross_field_rules(case.body)
    # A resubmission's body is a submission of the same reference as its path, from the same
    # requester (docs/api.md, "POST /v1/systems/{system}/requests/{external_ref}/resubmit").
    resubmission = (
        case.method.upper() == "POST"
        and case.path == "/v1/systems/{system}/requests/{external_ref}/resubmit"
    )
    if resubmission and isinstance(case.body, dict):
        keep_cross_field_rules(case.body)
        path_ref = (case.path_parameters or {}).get("external_ref")
        if isinstance(path_ref, str) and isinstance(case.body.get("external_ref"), str):
            case.body["external_ref"] = path_ref
        if isinstance(case.body.get("requester"), str):
            case.body["requester"] = "dina"
            keep_cross_field_rules(case.body)
    if case.method.upper() == "POST" and case.path == "/v1/me/absences" and isinstance(case.body, dict):
        keep_absence_rules(case.body)
    if case.method.upper() == "POST" and case.path == "/v1/admin/reassign" and isinstance(case.body, dict):
        keep_reassign_rules(case.body)
    if case.method.upper() == "GET" and case.path == "/v1/analytics/approvals" and isinstance(case.query, dict):
        keep_window_rules(case.query)


# CPython 3.11 before 3.11.8 may raise a spurious SystemError ("AST constructor recursion depth
# mismatch", CPython issue 106905) from ast.parse, which hypothesis calls only to describe a
# lambda in a strategy's repr; a plain description does as well.
_describe_lambda = lambda_sources.lambda_description


def _lambda_description(f):
    try:
        return _describe_lambda(f)
    except SystemError:
        return "lambda"


lambda_sources.lambda_description = _lambda_description
