"""Sends refused uploads over HTTP/2 with httpx2 and prints the statuses it read.

Usage: h2_upload.py URL CA_FILE TOKEN SIZE...  (one POST per size, application/json, the token
as a bearer token). Prints one line: the statuses, space-separated, or the error a request met.
"""

import sys

import httpx2


def main() -> None:
    url, ca_file, token = sys.argv[1:4]
    sizes = [int(size) for size in sys.argv[4:]]
    statuses = []
    with httpx2.Client(http2=True, verify=ca_file, timeout=10.0) as client:
        for size in sizes:
            try:
                response = client.post(
                    url,
                    content=b"x" * size,
                    headers={
                        "authorization": f"Bearer {token}",
                        "content-type": "application/json",
                    },
                )
                statuses.append(f"{response.status_code}/{response.http_version}")
            except httpx2.HTTPError as error:
                statuses.append(f"error:{type(error).__name__}")
    print(" ".join(statuses))


if __name__ == "__main__":
    main()
