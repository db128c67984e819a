#!/bin/sh
# Imports the saved objects of this folder into Kibana once it answers: the data view
# `audit-events-*` and the dashboard "polyhost: audit trail". Run by the `kibana-setup`
# service of docker-compose.yml; by hand: KIBANA_URL=http://127.0.0.1:5601 kibana/import.sh
set -eu
KIBANA_URL="${KIBANA_URL:-http://kibana:5601}"
DIR="$(dirname "$0")"
i=0
until curl -fsS "$KIBANA_URL/api/status" | grep -q '"level":"available"'; do
  i=$((i + 1))
  if [ "$i" -gt 90 ]; then
    echo "Kibana at $KIBANA_URL did not become available in 180 s" >&2
    exit 1
  fi
  sleep 2
done
for f in "$DIR"/*.ndjson; do
  answer="$(curl -fsS -X POST "$KIBANA_URL/api/saved_objects/_import?overwrite=true" \
    -H 'kbn-xsrf: polyhost' --form "file=@$f")"
  echo "$f: $answer"
  echo "$answer" | grep -q '"success":true' || { echo "import of $f failed" >&2; exit 1; }
done
