"""Serves a Hugging Face text-classification model in the shape of Text Embeddings Inference's
/predict, for portcullis's [validation.classifier].

POST /predict {"inputs": "text", "truncate": true} answers [{"label": ..., "score": ...}, ...]
with every label's score. Standard library HTTP server, one model, loopback by default.
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from transformers import pipeline


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a text-classification model id or path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    classify = pipeline("text-classification", model=args.model, top_k=None, truncation=True)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/predict":
                self.send_error(404)
                return
            try:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(min(length, 1 << 20)))
                text = body["inputs"]
                if not isinstance(text, str):
                    raise ValueError("inputs must be a string")
            except (ValueError, KeyError, TypeError):
                self.send_error(400)
                return
            scores = classify(text)
            if scores and isinstance(scores[0], list):
                scores = scores[0]
            answer = json.dumps([{"label": s["label"], "score": float(s["score"])} for s in scores])
            data = answer.encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass  # the texts are users' prompts: never logged

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
