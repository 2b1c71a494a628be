#!/usr/bin/env python3
"""A stand-in backend for agent/tests/push.rs: an HTTP server that takes
what the agent pushes and writes, for each request, a JSON summary into
OUT_DIR/req-N.json. OTLP bodies are decoded with OpenTelemetry's own
definitions (the PyPI `opentelemetry-proto` package, which
scripts/deps.sh installs into /var/cache/tracecar/otel-proto); Pyroscope
requests are checked against the ingest API's documented shape (query
parameters, a gzipped pprof body).

Usage: push_receiver.py PORT OUT_DIR [FAIL_FIRST]
  FAIL_FIRST: answer 503 to that many requests first.
"""

import gzip
import json
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, "/var/cache/tracecar/otel-proto")
from opentelemetry.proto.collector.profiles.v1development import (  # noqa: E402
    profiles_service_pb2,
)

PORT, OUT = int(sys.argv[1]), sys.argv[2]
FAIL_FIRST = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seen = {"n": 0}


def otlp(body):
    request = profiles_service_pb2.ExportProfilesServiceRequest()
    request.ParseFromString(body)
    d = request.dictionary
    s = d.string_table
    out = {"resource_profiles": []}
    for rp in request.resource_profiles:
        resource = {kv.key: kv.value.string_value for kv in rp.resource.attributes}
        profiles = []
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                functions = set()
                for sample in p.samples:
                    for li in d.stack_table[sample.stack_index].location_indices:
                        for line in d.location_table[li].lines:
                            functions.add(s[d.function_table[line.function_index].name_strindex])
                attributes = set()
                for sample in p.samples:
                    for ai in sample.attribute_indices:
                        a = d.attribute_table[ai]
                        attributes.add(s[a.key_strindex])
                profiles.append({
                    "scope": sp.scope.name,
                    "sample_type": [s[p.sample_type.type_strindex], s[p.sample_type.unit_strindex]],
                    "period_type": [s[p.period_type.type_strindex], s[p.period_type.unit_strindex]],
                    "period": p.period,
                    "samples": len(p.samples),
                    "total": sum(v for sample in p.samples for v in sample.values),
                    "duration_nano": p.duration_nano,
                    "time_unix_nano": p.time_unix_nano,
                    "profile_id": p.profile_id.hex(),
                    "functions": sorted(functions),
                    "sample_attributes": sorted(attributes),
                })
        out["resource_profiles"].append({"resource": resource, "profiles": profiles})
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        seen["n"] += 1
        n = seen["n"]
        url = urllib.parse.urlsplit(self.path)
        summary = {
            "n": n,
            "path": url.path,
            "query": dict(urllib.parse.parse_qsl(url.query)),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "bytes": len(body),
        }
        status = 503 if n <= FAIL_FIRST else 200
        summary["answered"] = status
        try:
            if url.path.endswith("/v1development/profiles"):
                summary["otlp"] = otlp(body)
            elif url.path.endswith("/ingest"):
                summary["gzip"] = body[:2] == b"\x1f\x8b"
                summary["pprof_bytes"] = len(gzip.decompress(body))
        except Exception as e:  # the test reads the failure
            summary["error"] = repr(e)
        tmp = os.path.join(OUT, f".req-{n}.json")
        with open(tmp, "w") as f:
            json.dump(summary, f)
        os.rename(tmp, os.path.join(OUT, f"req-{n}.json"))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
