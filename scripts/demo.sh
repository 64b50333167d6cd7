#!/usr/bin/env bash
# demo.sh: glci serve as a registry, end to end with skopeo.
#
# Starts `glci serve` on 127.0.0.1:0 with a temporary storage and GLCI_HOME (so
# auth and TLS are on, with a fresh CA), asks it for a job token for project
# `demo`, pushes over HTTPS as a CI job would, pulls anonymously, builds the OCI
# layout fixture (fixtures/images/make-oci-layout.sh), copies tag `multi` into
# the registry and back out to a new layout, prints the digests and checks
# that the manifest and every blob came back unchanged. Stops the server with
# SIGTERM and expects exit 0. Exits non-zero on any mismatch.
#
# `make demo` builds the release binary first. GLCI=path overrides the binary.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
GLCI=${GLCI:-$target_dir/release/glci}

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
[[ -x $GLCI ]] || die "$GLCI not found; run \`make build\` (or \`make demo\`)"
command -v skopeo >/dev/null || die "skopeo not found; run \`make deps\`"

work=$(mktemp -d)
server_pid=
cleanup() {
    local rc=$?
    if ((rc)) && [[ -s $work/serve.log ]]; then
        echo "demo: failed; last lines of the glci serve log:" >&2
        tail -n 40 "$work/serve.log" >&2 || true
    fi
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Start the server; its stdout is a coprocess pipe so we can wait, bounded,
# for the one `listening on ADDR` line. Its log goes to a file.
export GLCI_HOME=$work/home
mkdir -p "$GLCI_HOME"
# No pull-through upstreams: the demo never reaches beyond 127.0.0.1.
printf '[registry]\nupstreams = []\n' >"$GLCI_HOME/config.toml"
coproc SERVER { exec "$GLCI" serve --listen 127.0.0.1:0 --storage "$work/storage" 2>"$work/serve.log"; }
server_pid=$SERVER_PID
line=
if ! read -r -t 30 -u "${SERVER[0]}" line || [[ $line != "listening on "* ]]; then
    die "glci serve did not print 'listening on ADDR' (got: '${line}')"
fi
addr=${line#listening on }
echo "demo: glci serve (pid $server_pid) listening on $addr, storage $work/storage"

echo "demo: building OCI layout fixture"
bash "$root/fixtures/images/make-oci-layout.sh" "$work/src"

src=oci:$work/src:multi
remote=docker://$addr/demo/multi:v1
back=oci:$work/back:multi

sha256_of() { local s; s=$(sha256sum) && printf 'sha256:%s' "${s%% *}"; }

token=$("$GLCI" registry token --project demo --ttl 10m)
# A cert dir for skopeo holds only the CA certificate (it would take ca.key for a client key).
certs=$work/certs
mkdir -p "$certs"
cp "$GLCI_HOME/registry-ca/ca.crt" "$certs/"
echo "demo: without credentials a push is refused"
if skopeo copy -q --dest-cert-dir "$certs" "$src" "$remote" 2>/dev/null; then
    die "an anonymous push was accepted"
fi
echo "demo: skopeo copy $src -> $remote (HTTPS, verified against $certs/ca.crt, job token for 'demo')"
skopeo copy -q --dest-cert-dir "$certs" --dest-creds "gitlab-ci-token:$token" --digestfile "$work/pushed" "$src" "$remote"
echo "demo: skopeo copy $remote -> $back (anonymous pull)"
skopeo copy -q --src-cert-dir "$certs" --digestfile "$work/pulled" "$remote" "$back"

fail=0
check() { # check WHAT EXPECTED GOT
    if [[ $2 == "$3" ]]; then
        printf '  %-9s %-22s %s\n' ok "$1" "$3"
    else
        printf '  %-9s %-22s expected %s, got %s\n' MISMATCH "$1" "$2" "$3"
        fail=1
    fi
}

manifest=$(skopeo inspect --raw "$src" | sha256_of)
echo "demo: digests"
check "manifest (pushed)" "$manifest" "$(cat "$work/pushed")"
check "manifest (pulled)" "$manifest" "$(cat "$work/pulled")"
check "manifest (registry)" "$manifest" "$(skopeo inspect --raw --cert-dir "$certs" "$remote" | sha256_of)"
check "manifest (back)" "$manifest" "$(skopeo inspect --raw "$back" | sha256_of)"

# Every blob the manifest names must be in the new layout, byte for byte.
config=$(skopeo inspect --config --raw "$src" | sha256_of)
mapfile -t layers < <(skopeo inspect --format '{{range .Layers}}{{println .}}{{end}}' "$src" | sed '/^$/d')
((${#layers[@]} == 3)) || die "expected 3 layers in $src, found ${#layers[@]}"
for digest in "$config" "${layers[@]}"; do
    hex=${digest#sha256:}
    got=missing
    [[ -f $work/back/blobs/sha256/$hex ]] && got=$(sha256_of <"$work/back/blobs/sha256/$hex")
    label=layer
    [[ $digest == "$config" ]] && label=config
    check "$label" "$digest" "$got"
done
expected_blobs=$((2 + ${#layers[@]}))
got_blobs=$(find "$work/back/blobs/sha256" -type f | wc -l)
check "blob count" "$expected_blobs" "$got_blobs"

echo "demo: stopping glci serve"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=
check "serve exit status" 0 "$status"

((fail == 0)) || die "digests differ (see MISMATCH above)"
echo "demo: OK, image round-tripped through glci with identical digests"
