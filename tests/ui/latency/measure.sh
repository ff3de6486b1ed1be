#!/usr/bin/env bash
# Page latency of the dashboard with N devices: duhub serve (binary $1) on a fresh SQLite data dir
# filled by fill.py, each page fetched 10 times with curl (after one warm-up), median and max.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(realpath "$1"); N=${2:-10000}
D=$(mktemp -d)
cd "$D"
DUHUB_HTTPS_PORT=0 DUHUB_MQTT_PORT=0 DUHUB_BIND=127.0.0.1 RUST_LOG=warn "$BIN" serve > serve1.log 2>&1 &
PID=$!
for _ in $(seq 3000); do grep -q "duhub is running" serve1.log && break; sleep 0.1; done
kill $PID; wait $PID || true
python3 "$HERE/fill.py" duhub-data/duhub.db "$N"
DUHUB_HTTPS_PORT=0 DUHUB_MQTT_PORT=0 DUHUB_BIND=127.0.0.1 RUST_LOG=warn "$BIN" serve > serve2.log 2>&1 &
PID=$!
for _ in $(seq 3000); do grep -q "duhub is running" serve2.log && break; sleep 0.1; done
URL=$(python3 -c 'import json;print(json.load(open("duhub-data/admin.json"))["httpsUrl"])')
TOKEN=$(python3 -c 'import json;print(json.load(open("duhub-data/admin.json"))["apiToken"])')
CA=duhub-data/tls/ca.pem
curl -s --cacert $CA -c jar -o /dev/null --data-urlencode "token=$TOKEN" "$URL/ui/signin"
# One update and a deployment to group-3 (1,000 devices, half of them toasters) through the REST API.
cat > im.json <<JSON
{"updateId":{"provider":"contoso","name":"toaster","version":"2.0"},"isDeployable":true,"compatibility":[{"manufacturer":"contoso","model":"toaster"}],"instructions":{"steps":[{"handler":"microsoft/script:1","files":["install.sh"],"handlerProperties":{"installedCriteria":"2.0"}}]},"files":[{"filename":"install.sh","sizeInBytes":3,"hashes":{"sha256":"$(printf 'hi\n' | openssl dgst -sha256 -binary | base64)"}}],"createdDateTime":"2026-01-01T00:00:00Z","manifestVersion":"5.0"}
JSON
printf 'hi\n' > install.sh
PATH="$(dirname "$BIN"):$PATH" "$BIN" update import im.json > import.log 2>&1 || cat import.log
PATH="$(dirname "$BIN"):$PATH" "$BIN" deployment create group-3 d1 --update contoso/toaster/2.0 > dep.log 2>&1 || cat dep.log
for page in /ui/ /ui/groups /ui/deployments/group-3/d1 /ui/deployments/group-3/d1?state=Failed /ui/groups/group-3 /ui/devices "/ui/devices?q=load-0042" /ui/devices/load-000042 /ui/updates /ui/deployments /ui/tokens; do
  curl -s --cacert $CA -b jar -o /dev/null "$URL$page"
  times=$(for _ in $(seq 10); do curl -s --cacert $CA -b jar -o /dev/null -w '%{time_starttransfer}\n' "$URL$page"; done | sort -n)
  median=$(echo "$times" | sed -n 5p); max=$(echo "$times" | tail -1)
  status=$(curl -s --cacert $CA -b jar -o /dev/null -w '%{http_code}' "$URL$page")
  printf '%-28s status %s  median %6.1f ms  max %6.1f ms\n' "$page" "$status" "$(echo "$median*1000" | bc)" "$(echo "$max*1000" | bc)"
done
kill $PID; wait $PID || true
cd /; rm -rf "$D"
