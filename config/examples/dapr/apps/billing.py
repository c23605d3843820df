"""billing: serves POST /charge/{order} and subscribes to topic `orders` (standard library only)."""

import contextlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Billing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/dapr/subscribe":  # the sidecar asks once the app listens
            self.reply(200, [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}])
        else:
            self.reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/charge/"):  # /v1.0/invoke/billing/method/charge/{order}
            order, amount = self.path.removeprefix("/charge/"), body.decode()
            caller = self.headers.get("dapr-caller-app-id", "?")
            print(f"billing: charged order {order}: {amount} (called by {caller})", flush=True)
            self.reply(200, {"order": order, "charged": amount})
        elif self.path == "/orders":  # an event of topic orders, as a CloudEvent
            event = json.loads(body)
            data = json.dumps(event["data"])
            print(f"billing: event from {event['source']}: {data}", flush=True)
            self.reply(200, {"status": "SUCCESS"})  # acknowledged: not redelivered
        else:
            self.reply(404, {"error": f"no route {self.path}"})

    def reply(self, status: int, value: object) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the lines above are the app's output


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Billing)
with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the app and its sidecar
    server.serve_forever()
