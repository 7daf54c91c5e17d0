# helm test: exits 0 only if GET $READYZ_URL answers 200 (the API is up, its database
# reachable and migrated).
import os
import sys
import urllib.error
import urllib.request

url = os.environ["READYZ_URL"]
try:
    with urllib.request.urlopen(url, timeout=10) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
except OSError as exc:
    sys.exit(f"GET {url} failed: {exc}")
print(f"GET {url}: {status} {body.decode(errors='replace')}")
sys.exit(0 if status == 200 else 1)
