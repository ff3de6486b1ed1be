#!/usr/bin/env bash
# Read-path latency of a running `duhub serve` (issue 13/14 targets): the REST deployment status,
# compliance and group list (N requests each on one keep-alive connection, p50/p99), `duhub
# deployment status G D --devices` over the whole group, and each dashboard page (10 requests).
# The group is $default and its first deployment (what `duhub-loadgen populate` + `deploy
# --populated` make); see README "Server load tests".
# usage: tests/ui/latency/read_paths.sh DATA_DIR BIN_DIR [N]   (BIN_DIR holds duhub)
set -euo pipefail
DATA=$1; BIN=$2; N=${3:-50}
DEVICES_OUT=$(mktemp)
ADMIN=$DATA/admin.json
URL=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["httpsUrl"])' $ADMIN)
TOKEN=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["apiToken"])' $ADMIN)
CA=$DATA/tls/ca.pem
G='%24default'
API="$URL/deviceUpdate/default/management"
V='api-version=2022-10-01'
DEP=$(curl -s --cacert $CA -H "Authorization: Bearer $TOKEN" "$API/groups/$G/deployments?$V" | python3 -c 'import json,sys;print(json.load(sys.stdin)["value"][0]["deploymentId"])')
echo "load: $(uptime)"
stats() { python3 -c '
import sys,math
v=sorted(float(x)*1000 for x in sys.stdin.read().split())
n=len(v); p=lambda q: v[min(n-1, math.ceil(q*n)-1)]
print(f"n={n} p50={p(0.5):.1f} ms p99={p(0.99):.1f} ms max={v[-1]:.1f} ms")'; }
rest() {
  local name=$1 url=$2 args=()
  for _ in $(seq $((N+1))); do args+=(-o /dev/null "$url"); done
  printf '%-22s ' "$name"
  curl -s --cacert $CA -H "Authorization: Bearer $TOKEN" -w "%{time_total}\n" "${args[@]}" | tail -n +2 | stats
}
rest "deployment status" "$API/groups/$G/deployments/$DEP/status?$V"
rest "compliance" "$API/updateCompliance?$V"
rest "group list" "$API/groups?$V"
echo "load: $(uptime)"
start=$(date +%s.%N)
"$BIN/duhub" deployment status '$default' "$DEP" --devices --admin $ADMIN > "$DEVICES_OUT"
end=$(date +%s.%N)
echo "deployment status --devices: $(echo "$end - $start" | bc) s, $(grep -c . "$DEVICES_OUT") lines"
echo "load: $(uptime)"
JAR=$(mktemp)
curl -s --cacert $CA -c $JAR -o /dev/null --data-urlencode "token=$TOKEN" "$URL/ui/signin"
FIRST=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["value"][0]["deviceId"])' <(curl -s --cacert $CA -H "Authorization: Bearer $TOKEN" "$API/devices?$V"))
for page in /ui/ /ui/groups "/ui/deployments/$G/$DEP" "/ui/deployments/$G/$DEP?state=Failed" "/ui/groups/$G" /ui/devices "/ui/devices?q=load-0042" "/ui/devices/$FIRST" /ui/updates /ui/deployments /ui/tokens; do
  args=(); for _ in $(seq 11); do args+=(-o /dev/null "$URL$page"); done
  status=$(curl -s --cacert $CA -b $JAR -o /dev/null -w '%{http_code}' "$URL$page")
  printf '%-40s %s ' "$page" "$status"
  curl -s --cacert $CA -b $JAR -w "%{time_total}\n" "${args[@]}" | tail -n +2 | stats
done
rm -f $JAR "$DEVICES_OUT"
echo "load: $(uptime)"
