"""Benchmark: what one request to the HTTPS event endpoint costs, counted on the emulators and
priced by a model of what no emulator shows.

Counted: each request goes, as API Gateway's payload 2.0 event, to the endpoint's Lambda
(:class:`runtime.handlers.ingress.IngressLambda`) built over the table, bus and payload bucket
``Harness.aws`` provisions on the emulators (DynamoDB Local + moto). Its clients are its own,
so botocore hooks on them count its calls and nothing else: DynamoDB ``GetItem`` (the key's
gate) and the read units it is billed, ``PutEvents`` calls, entries and 64 KB chunks, S3
``PutObject`` (an event whose entry is over 256 KB). Each case is posted on a new container
(cold: the key cache is empty) and again on the same one (warm: a key read in the last 30 s
is trusted). The milliseconds are the emulators' wall time, not AWS latency.

Modelled, at us-east-1 list prices (each constant below names its source): cost per million
events of single-event requests against batches; the key partition's read load and the Lambda
concurrency the stage's throttle implies; the share of the account's PutEvents quota a full
stage rate takes. Lambda's duration on AWS is an assumption (``ASSUMED_*_MS``), stated as one.

Prints figures; it is not a test (``tests/local/test_ingress_bench.py`` runs ``--quick``).
Needs the emulators (`scripts/install-test-deps.sh`).
Run: .venv/bin/python bench/ingress_cost.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import io
import json
import logging
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.table import item_bytes
from runtime.handlers.ingress import IngressLambda
from runtime.ingress.keys import KEY_CACHE_SECONDS
from runtime.testing import Harness
from runtime.webhooks import Stripe
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.lambda_events import http_api_event

REGION = "us-east-1"

# --- prices, us-east-1, USD (looked up 2026-12; the page each is on) -----------------------
# API Gateway HTTP API: $1.00 per million requests for the first 300 million a month ($0.90
# after), "metered in 512 KB increments" (a 1.1 MB request is 3 requests).
# https://aws.amazon.com/api-gateway/pricing/ and the API Gateway private-APIs whitepaper's
# cost-optimization table (docs.aws.amazon.com/whitepapers/.../cost-optimization.html).
HTTP_API_REQUEST = 1.00 / 1e6
HTTP_API_METERING_BYTES = 512 * 1024
# Lambda: $0.20 per million requests; arm64 $0.0000133334 per GB-s (x86 $0.0000166667).
# https://aws.amazon.com/lambda/pricing/ (the same figures as bench/aws_calls.py).
LAMBDA_REQUEST = 0.20 / 1e6
LAMBDA_GB_SECOND_ARM = 0.0000133334
LAMBDA_MEMORY_GB = 512 / 1024  # the endpoint's Lambda (infra/constructs/event_api.py: 512 MB)
# EventBridge custom events: $1.00 per million, "each 64 KB chunk of a payload is billed as
# one event". https://aws.amazon.com/eventbridge/pricing/
EVENTBRIDGE_EVENT = 1.00 / 1e6
EVENTBRIDGE_CHUNK_BYTES = 64 * 1024
# DynamoDB on-demand: $0.125 per million read request units; a strongly consistent read of
# up to 4 KB is 1 RRU (also of an item that is not there).
# https://aws.amazon.com/dynamodb/pricing/on-demand/
DDB_RRU = 0.125 / 1e6
DDB_READ_UNIT_BYTES = 4 * 1024
# S3 Standard: $0.005 per 1,000 PUT, COPY, POST, LIST requests. https://aws.amazon.com/s3/pricing/
S3_PUT = 0.005 / 1000

# --- quotas ---------------------------------------------------------------------------------
# One partition serves at most 3,000 read units a second (and 1,000 write units), whatever
# the table's capacity mode. DynamoDB developer guide, "Key range throughput exceeded (hot
# partitions)" / "Understanding DynamoDB warm throughput" (docs.aws.amazon.com/amazondynamodb).
PARTITION_RCU = 3000
# PutEvents: a soft limit of 10,000 requests a second per account in us-east-1, us-west-2 and
# eu-west-1; 2,400, 1,200, 600 or 400 in other Regions (us-east-2: 2,400).
# EventBridge user guide, "Amazon EventBridge quotas" (docs.aws.amazon.com/eventbridge/latest/
# userguide/eb-quota.html), PutEvents quotas by Region.
PUT_EVENTS_TPS = {"us-east-1": 10_000, "us-east-2": 2_400, "the lowest Regions": 400}
# The endpoint's stage throttle by default, requests a second (infra/constructs/event_api.py
# DEFAULT_RATE, burst 200); the account's HTTP API quota per Region is 10,000 (burst 5,000).
# API Gateway developer guide, "Throttling requests to your HTTP API".
STAGE_RATE = 100
ACCOUNT_API_RATE = 10_000

# --- what Lambda's duration on AWS is taken to be (an assumption, not measured) --------------
#: A warm request: parse, validate, the key from the cache, one PutEvents round trip.
ASSUMED_WARM_MS = 50.0
#: Each further PutEvents call (the bus sends its batches of 10 one after another).
ASSUMED_PUT_EVENTS_MS = 20.0
#: Each S3 PutObject of an event over 256 KB (about 1 MB at ~50 MB/s, plus the round trip).
ASSUMED_S3_PUT_MS = 40.0

APP_ID = "ingressbench"
EVENT = "bench/ping"
STRIPE_SECRET = "whsec_bench_0123456789"
STRIPE_SECRET_NAME = "STRIPE_WEBHOOK_SECRET"


@dataclass(frozen=True)
class Case:
    """One kind of request.

    Attributes:
        name: How it is shown.
        events: Events it carries (a list when more than one).
        pad: Bytes of padding in each event's data (0: a small event, ~40 bytes).
        webhook: A Stripe-signed webhook rather than events posted with a key.
    """

    name: str
    events: int = 1
    pad: int = 0
    webhook: bool = False


CASES = (Case("1 event"), Case("batch of 10", 10), Case("batch of 100", 100),
         Case("1000 small events", 1000), Case("1 MiB event", pad=1024 * 1024),
         Case("webhook (Stripe)", webhook=True))
#: The test's configuration: the same paths (batched, one over 256 KB, a webhook), smaller.
QUICK = (Case("1 event"), Case("batch of 10", 10), Case("batch of 25", 25),
         Case("300 KB event", pad=300 * 1024), Case("webhook (Stripe)", webhook=True))


@dataclass
class Counted:
    """What one request cost, as counted on the emulators."""

    status: int
    body_bytes: int
    get_item: int
    rru: float  # derived from the item read (size, consistency), as DynamoDB bills it
    rru_reported: float  # what DynamoDB Local said (ReturnConsumedCapacity)
    put_events: int
    entries: int
    chunks: int  # EventBridge billing units: each entry's 64 KB chunks
    s3_puts: int
    other_calls: dict[str, int]
    emulator_ms: float


class Calls:
    """Counts one client set's calls through botocore hooks (see the module doc)."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.rru = 0.0
        self.rru_reported = 0.0
        self.entries = 0
        self.chunks = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params", self._params)
        client.meta.events.register("after-call.dynamodb.GetItem", self._read)

    def clear(self) -> None:
        self.ops.clear()
        self.rru = self.rru_reported = 0.0
        self.entries = self.chunks = 0

    def _params(self, params: dict[str, Any], model: Any, context: dict[str, Any],
                **_: Any) -> None:
        service = model.service_model.service_name  # "events", not the hook's "eventbridge"
        self.ops[f"{service}.{model.name}"] += 1
        if model.name == "PutEvents":
            for entry in params.get("Entries", []):
                self.entries += 1
                self.chunks += max(1, math.ceil(entry_bytes(entry) / EVENTBRIDGE_CHUNK_BYTES))
        if service == "dynamodb":
            context["bench_consistent"] = bool(params.get("ConsistentRead"))
            # Only to compare with what is derived below: the store does not ask for it.
            params["ReturnConsumedCapacity"] = "TOTAL"

    def _read(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        item = parsed.get("Item")
        units = max(1, math.ceil(item_bytes(item) / DDB_READ_UNIT_BYTES)) if item else 1
        # Billed even when the item is not there; an eventually consistent read is half.
        self.rru += units if context.get("bench_consistent") else units / 2
        self.rru_reported += (parsed.get("ConsumedCapacity") or {}).get("CapacityUnits", 0.0)


def entry_bytes(entry: Mapping[str, Any]) -> int:
    """A PutEvents entry's size as EventBridge counts it (Source, DetailType, Detail)."""
    return sum(len(str(entry.get(k, "")).encode()) for k in ("Source", "DetailType", "Detail"))


def bench_app() -> App:
    app = App(APP_ID)

    @app.function(id="ping", trigger=TriggerEvent(EVENT))
    def ping(ctx: Context) -> Any:
        return ctx.event.data.get("i")

    app.webhook("stripe", verify=Stripe(secret=STRIPE_SECRET_NAME),
                secrets={STRIPE_SECRET_NAME: "secretsmanager:bench/stripe"})
    return app


def request(case: Case, key: str, now: float) -> tuple[str, bytes, dict[str, str]]:
    """The path, body and headers of one request of ``case``."""
    if case.webhook:
        payload = {"id": "evt_1Bench", "type": "invoice.paid",
                   "data": {"object": {"id": "in_1", "amount_paid": 1200}}}
        body = json.dumps(payload).encode()
        at = int(now)
        mac = hmac.new(STRIPE_SECRET.encode(), f"{at}.".encode() + body,
                       hashlib.sha256).hexdigest()
        return "/webhooks/stripe", body, {"content-type": "application/json",
                                          "stripe-signature": f"t={at},v1={mac}"}
    events = [{"name": EVENT, "data": {"i": i, **({"pad": "x" * case.pad} if case.pad else {})}}
              for i in range(case.events)]
    body = json.dumps(events[0] if case.events == 1 else events).encode()
    return f"/e/{key}", body, {"content-type": "application/json"}


class Endpoint:
    """The endpoint's Lambda on the emulators, with counted clients; a new one is a cold start."""

    def __init__(self, h: Harness, emulators: Any) -> None:
        backend = h.backend
        assert isinstance(backend, AwsBackend)
        self.h, self.backend = h, backend
        self.calls = Calls()
        self.clients = {s: emulators.client(s) for s in ("dynamodb", "events", "s3")}
        for client in self.clients.values():
            self.calls.attach(client)
        self.container = self.cold()

    def cold(self) -> IngressLambda:
        """A new container: built as at a cold start, its key cache empty."""
        env = self.backend.resources.ingress_env(self.backend.payload_bucket)
        self.container = IngressLambda(self.backend.app, env, self.clients, self.h.clock)
        return self.container

    def post(self, case: Case, key: str) -> Counted:
        path, body, headers = request(case, key, self.h.clock.now())
        route = "POST /webhooks/{source}" if case.webhook else "POST /e/{key}"
        event = http_api_event("POST", path, headers, body, route_key=route)
        self.calls.clear()
        t0 = time.perf_counter()
        response = self.container.handle(event)
        ms = (time.perf_counter() - t0) * 1000
        ops = dict(self.calls.ops)
        counted = {"dynamodb.GetItem", "events.PutEvents", "s3.PutObject"}
        return Counted(
            status=int(response["statusCode"]), body_bytes=len(body),
            get_item=ops.get("dynamodb.GetItem", 0), rru=self.calls.rru,
            rru_reported=self.calls.rru_reported, put_events=ops.get("events.PutEvents", 0),
            entries=self.calls.entries, chunks=self.calls.chunks,
            s3_puts=ops.get("s3.PutObject", 0),
            other_calls={op: n for op, n in ops.items() if op not in counted},
            emulator_ms=ms)


# --- the model --------------------------------------------------------------------------------


def assumed_ms(c: Counted) -> float:
    """Lambda's billed duration of a warm request on AWS: an assumption (see the constants)."""
    return (ASSUMED_WARM_MS + ASSUMED_PUT_EVENTS_MS * max(0, c.put_events - 1)
            + ASSUMED_S3_PUT_MS * c.s3_puts)


def request_cost(c: Counted) -> dict[str, float]:
    """The price of one request, by service (USD)."""
    metered = max(1, math.ceil(c.body_bytes / HTTP_API_METERING_BYTES))
    return {
        "api_gateway": metered * HTTP_API_REQUEST,
        "lambda": LAMBDA_REQUEST + LAMBDA_GB_SECOND_ARM * LAMBDA_MEMORY_GB * assumed_ms(c) / 1000,
        "eventbridge": c.chunks * EVENTBRIDGE_EVENT,
        "dynamodb": c.rru * DDB_RRU,
        "s3": c.s3_puts * S3_PUT,
    }


def per_million_events(c: Counted, events: int) -> float:
    return sum(request_cost(c).values()) / events * 1e6


def load_model(single: Counted, batch10: Counted, key_read_rru: float) -> dict[str, Any]:
    """Key partition reads, implied concurrency, PutEvents quota share (see the module doc).

    Args:
        single: A warm single-event request.
        batch10: A warm request of 10 events.
        key_read_rru: What one read of a key's gate is billed (a cold request's).
    """
    ms = assumed_ms(single) / 1000
    stage_concurrency = STAGE_RATE * ms
    account_concurrency = ACCOUNT_API_RATE * ms
    # A warm container reads each key it is sent at most once per KEY_CACHE_SECONDS; every key
    # gate lives under one partition key (GATE#eventkey), so the keys share its 3,000 RCU/s.
    def key_reads(containers: float) -> float:
        return max(1.0, containers) / KEY_CACHE_SECONDS

    at_account = key_reads(account_concurrency)
    return {
        "assumed_warm_ms": assumed_ms(single),
        "stage_rate_rps": STAGE_RATE,
        "stage_concurrency": stage_concurrency,
        "account_rate_rps": ACCOUNT_API_RATE,
        "account_concurrency": account_concurrency,
        "key_reads_per_s_at_stage_rate": key_reads(stage_concurrency),
        "key_reads_per_s_at_account_rate": at_account,
        "partition_rcu": PARTITION_RCU,
        "keys_before_partition_limit_at_account_rate": math.floor(PARTITION_RCU / at_account),
        "key_reads_per_container_hour_usd": 3600 / KEY_CACHE_SECONDS * key_read_rru * DDB_RRU,
        "put_events_per_s_at_stage_rate_batch10": STAGE_RATE * batch10.put_events,
        "put_events_quota_share": {region: STAGE_RATE * batch10.put_events / tps
                                   for region, tps in PUT_EVENTS_TPS.items()},
    }


# --- running it ---------------------------------------------------------------------------


def measure(emulators: Any, cases: Sequence[Case] = CASES, repeats: int = 3) -> dict[str, Any]:
    """Post every case on a cold container, then ``repeats`` times warm; the figures.

    The warm figures are the last warm request's calls and the median of the warm times
    (a case of more than 100 events is posted warm once).
    """
    os.environ[STRIPE_SECRET_NAME] = STRIPE_SECRET  # a secret is its env variable off Lambda
    # The workers and the endpoint log every request (EMF lines to stdout, as Lambda wants).
    with contextlib.redirect_stdout(io.StringIO()):
        h = Harness.aws(bench_app(), emulators)
        try:
            endpoint = Endpoint(h, emulators)
            key = h.create_key(label="bench", prefixes=["bench/"])
            rows: list[dict[str, Any]] = []
            for case in cases:
                endpoint.cold()
                cold = endpoint.post(case, key)
                # moto slows as the queues fill: the largest request is posted warm once.
                times = max(1, repeats if case.events <= 100 else 1)
                warm = [endpoint.post(case, key) for _ in range(times)]
                last = warm[-1]
                last.emulator_ms = statistics.median(w.emulator_ms for w in warm)
                rows.append({"case": case.name, "events": case.events, "cold": asdict(cold),
                             "warm": asdict(last),
                             "usd_per_request": request_cost(last),
                             "usd_per_million_events": per_million_events(last, case.events),
                             "assumed_lambda_ms": assumed_ms(last),
                             # Every request at the stage's rate: the calls a second it makes.
                             "put_events_share_at_stage_rate": STAGE_RATE * last.put_events
                             / PUT_EVENTS_TPS[REGION]})
        finally:
            h.close()
    by_name = {r["case"]: r for r in rows}
    single = Counted(**by_name[cases[0].name]["warm"])
    batch10 = Counted(**next(r["warm"] for r in rows if r["events"] == 10))
    key_read_rru = by_name[cases[0].name]["cold"]["rru"]
    return {"region": REGION, "rows": rows, "load": load_model(single, batch10, key_read_rru),
            "prices": {"http_api_per_million": HTTP_API_REQUEST * 1e6,
                       "http_api_metering_kb": HTTP_API_METERING_BYTES // 1024,
                       "lambda_per_million": LAMBDA_REQUEST * 1e6,
                       "lambda_gb_s_arm": LAMBDA_GB_SECOND_ARM,
                       "lambda_memory_mb": int(LAMBDA_MEMORY_GB * 1024),
                       "eventbridge_per_million_chunks": EVENTBRIDGE_EVENT * 1e6,
                       "eventbridge_chunk_kb": EVENTBRIDGE_CHUNK_BYTES // 1024,
                       "dynamodb_per_million_rru": DDB_RRU * 1e6,
                       "s3_put_per_thousand": S3_PUT * 1000}}


def report(fig: dict[str, Any]) -> None:
    print(f"Event endpoint, one request (counted on the emulators; prices {fig['region']})")
    print(f"{'request':<20} {'':>4} {'status':>6} {'GetItem':>7} {'RRU':>4} {'PutEvents':>9} "
          f"{'entries':>7} {'64KB':>5} {'S3 Put':>6} {'emulator ms':>11}")
    for r in fig["rows"]:
        for temp in ("cold", "warm"):
            c = r[temp]
            print(f"{r['case'] if temp == 'cold' else '':<20} {temp:>4} {c['status']:>6} "
                  f"{c['get_item']:>7} {c['rru']:>4.1f} {c['put_events']:>9} "
                  f"{c['entries']:>7} {c['chunks']:>5} {c['s3_puts']:>6} "
                  f"{c['emulator_ms']:>11.1f}")
    print("emulator ms: wall time on DynamoDB Local + moto (warm: the median), not AWS latency")
    print(f"\nModel, warm requests ({fig['region']}; Lambda's duration on AWS ASSUMED: "
          f"{ASSUMED_WARM_MS:.0f} ms + {ASSUMED_PUT_EVENTS_MS:.0f} ms a further PutEvents + "
          f"{ASSUMED_S3_PUT_MS:.0f} ms an S3 put)")
    print(f"{'request':<20} {'Lambda ms':>9} {'API GW':>9} {'Lambda':>9} {'EventBr':>9} "
          f"{'DynamoDB':>9} {'S3':>9} {'$/request':>10} {'$/M events':>10} {'PutEv quota':>11}")
    for r in fig["rows"]:
        cost = r["usd_per_request"]
        print(f"{r['case']:<20} {r['assumed_lambda_ms']:>9.0f} "
              + " ".join(f"{cost[k] * 1e6:>8.2f}u" for k in
                         ("api_gateway", "lambda", "eventbridge", "dynamodb", "s3"))
              + f" {sum(cost.values()):>10.7f} {r['usd_per_million_events']:>10.2f}"
              f" {r['put_events_share_at_stage_rate']:>11.1%}")
    print(f"u = micro-dollars ($ per million such requests); PutEv quota: the share of "
          f"{fig['region']}'s {PUT_EVENTS_TPS[fig['region']]:,} PutEvents/s that {STAGE_RATE} "
          "such requests a second (the stage's rate) take")
    one = fig["rows"][0]["usd_per_million_events"]
    hundred = next((r for r in fig["rows"] if r["events"] == 100), None)
    if hundred is not None:
        print(f"a million events: ${one:.2f} one per request, "
              f"${hundred['usd_per_million_events']:.2f} in batches of 100 "
              f"({one / hundred['usd_per_million_events']:.1f}x less)")
    ld = fig["load"]
    print(f"\nLoad ({fig['region']}):")
    print(f"  stage throttle {ld['stage_rate_rps']} rps x {ld['assumed_warm_ms']:.0f} ms = "
          f"{ld['stage_concurrency']:.0f} concurrent Lambdas; at the account's "
          f"{ld['account_rate_rps']:,} rps: {ld['account_concurrency']:.0f}")
    print(f"  key reads: one GetItem per key per {KEY_CACHE_SECONDS:.0f} s per warm container = "
          f"{ld['key_reads_per_s_at_stage_rate']:.2f}/s per key at the stage rate, "
          f"{ld['key_reads_per_s_at_account_rate']:.1f}/s at the account rate, against "
          f"{ld['partition_rcu']:,} RCU/s for the keys' one partition key: "
          f"{ld['keys_before_partition_limit_at_account_rate']:,} keys in use at once before it "
          f"throttles; ${ld['key_reads_per_container_hour_usd']:.6f} a container-hour per key")
    shares = ", ".join(f"{share:.1%} in {region} ({PUT_EVENTS_TPS[region]:,}/s)"
                       for region, share in ld["put_events_quota_share"].items())
    print(f"  PutEvents: the full stage rate of batch-10 requests is "
          f"{ld['put_events_per_s_at_stage_rate_batch10']:,} calls/s, of the account's quota "
          f"{shares}")
    print("\nprices: HTTP API $1.00/M requests (512 KB increments); Lambda arm64 $0.20/M + "
          "$0.0000133334/GB-s at 512 MB; EventBridge $1.00/M 64 KB chunks; DynamoDB on-demand "
          "$0.125/M RRU; S3 $0.005/1,000 PUT; sources in bench/ingress_cost.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="small cases, one warm repeat")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    from stepkit_emulators.emulators import aws_emulators

    with aws_emulators() as emulators:
        for key, value in emulators.env().items():
            os.environ[key] = value
        fig = measure(emulators, QUICK if args.quick else CASES, 1 if args.quick else 3)
    if args.json:
        print(json.dumps(fig, indent=1))
    else:
        report(fig)


if __name__ == "__main__":
    main()
