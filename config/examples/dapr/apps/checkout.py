"""checkout: POST /order/{order} charges it at billing through the sidecar, then publishes it."""

import contextlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError
from urllib.request import Request, urlopen

SIDECAR = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"  # set by `meshwire run ... --`


def post(path: str, body: bytes, content_type: str) -> bytes:
    """POST to this app's own sidecar; the reply's body."""
    request = Request(SIDECAR + path, body, {"content-type": content_type}, method="POST")
    with urlopen(request) as reply:
        answer: bytes = reply.read()
    return answer


class Checkout(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # GET /dapr/subscribe too: checkout subscribes in resources/ instead
        self.reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/order/"):
            order, amount = self.path.removeprefix("/order/"), body.decode()
            event = json.dumps({"orderId": order, "amount": amount}).encode()
            try:
                charge = post(f"/v1.0/invoke/billing/method/charge/{order}", body, "text/plain")
                print(f"checkout: order {order} charged by billing, publishing it", flush=True)
                post("/v1.0/publish/pubsub/orders", event, "application/json")
            except HTTPError as err:  # the sidecar's Dapr error, passed on
                self.reply(err.code, json.loads(err.read()))
                return
            charged = json.loads(charge)["charged"]
            self.reply(200, {"order": order, "charged": charged, "published": "orders"})
        elif self.path.startswith("/orders"):  # routed by resources/subscription.yaml
            event = json.loads(body)
            data = json.dumps(event["data"])
            print(f"checkout: event from {event['source']}: {data}", flush=True)
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


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Checkout)
with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the app and its sidecar
    server.serve_forever()
