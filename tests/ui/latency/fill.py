"""Writes N device twins with Device Update agents straight into a stopped duhub's SQLite database
(10 groups, 2 device classes, 1 in 10 reporting a failed install) and asks for the per-device
records to be rebuilt at the next start. For measuring the dashboard's page latency only."""
import json, sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
rows = []
for i in range(n):
    model = "toaster" if i % 2 == 0 else "kettle"
    agent = {"deviceProperties": {"manufacturer": "contoso", "model": model,
             "contractModelId": "dtmi:azure:iot:deviceUpdateContractModel;3", "aduVer": "DU;agent/1.1.0"},
             "compatPropertyNames": "manufacturer,model", "state": 0,
             "installedUpdateId": json.dumps({"provider": "contoso", "name": model, "version": "1.0"})}
    if i % 10 == 3:
        agent["state"] = 255
        agent["lastInstallResult"] = {"resultCode": 0, "extendedResultCodes": "0000001C", "resultDetails": "disk full"}
    reported = {"deviceUpdate": {"__t": "c", "agent": agent}, "deviceInformation": {"__t": "c", "osName": "Debian"}}
    tags = {"ADUGroup": f"group-{i % 10}"}
    rows.append((f"load-{i:06d}", "k", "k", "enabled", None, "e", "1", "2026-01-01T00:00:00Z",
                 "Connected" if i % 3 == 0 else "Disconnected", json.dumps(tags), json.dumps(reported)))
con.executemany("INSERT INTO devices (device_id, primary_key, secondary_key, status, status_reason, etag, generation_id,"
                " created_at, connection_state, tags, reported) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
con.execute("INSERT INTO du_record_backfill (pending) VALUES (1)")
con.commit()
print("inserted", n)
