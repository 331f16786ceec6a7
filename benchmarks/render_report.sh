#!/usr/bin/env bash
# Render a fusiontune HTML report to PNG with headless Chromium (Debian package: chromium)
# so that a human can look at it: broken images show as empty boxes.
# usage: benchmarks/render_report.sh REPORT.html [OUT.png]
set -euo pipefail
html=${1:?usage: render_report.sh REPORT.html [OUT.png]}
out=${2:-${html%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$(realpath -m "$out")" --window-size=1280,4000 \
  "file://$(realpath "$html")" >/dev/null 2>&1
echo "wrote $out"
