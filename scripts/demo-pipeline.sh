#!/usr/bin/env bash
# demo-pipeline.sh: `glci run` with its embedded registry, end to end (issue 8).
#
# Copies fixtures/demo into a temporary git project and runs its pipeline with the real
# glci-mock (your GLCI_HOME, port mock_server_port): job `build-image` builds an image with
# skopeo (toolbox image assembled locally by fixtures/demo/make-toolbox.sh) and pushes it to
# $CI_REGISTRY_IMAGE over HTTPS, verified with the CA glci mounts; job `run-image` runs in
# that image. Then removes the glci-mock container and the host's copy of the image and runs
# again with DEMO_REUSE=1 (only `run-image`): glci-mock is re-created on the same volume and
# the image is still there. Ends with `glci registry list --project demo/app`.
#
# GLCI=path overrides the binary. Nothing is pulled from the internet.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
GLCI=${GLCI:-$target_dir/release/glci}
TOOLBOX=glci-demo/toolbox:1
PROJECT=demo/app

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
[[ -x $GLCI ]] || die "$GLCI not found; run \`make build\` (or \`make demo\`)"
docker version >/dev/null 2>&1 || die "the Docker daemon does not answer; run \`make deps\`"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "demo: assembling the toolbox image $TOOLBOX (skopeo + busybox, from this host's packages)"
bash "$root/fixtures/demo/make-toolbox.sh" "$TOOLBOX"

project=$work/project
cp -r "$root/fixtures/demo" "$project"
rm -f "$project/make-toolbox.sh"
git -C "$project" init -q
git -C "$project" add -A
git -C "$project" -c user.name=glci-demo -c user.email=demo@glci.invalid commit -qm "glci demo"
sha=$(git -C "$project" rev-parse --short=8 HEAD)
port=$("$GLCI" config | awk -F' = ' '$1 == "mock_server_port" {print $2; exit}')
port=${port:-39741}
image=glci-mock:$port/$PROJECT/app:$sha

echo "demo: glci run (build-image pushes $image, run-image runs in it)"
(cd "$project" && "$GLCI" run --project "$PROJECT")

echo "demo: removing the glci-mock container and the host's copy of the image"
docker rm -f glci-mock >/dev/null
docker image rm "$image" >/dev/null 2>&1 || true

echo "demo: glci run again, only run-image (DEMO_REUSE=1): glci-mock comes back with its data"
(cd "$project" && "$GLCI" run --project "$PROJECT" --env DEMO_REUSE=1)

echo "demo: glci registry list --project $PROJECT"
"$GLCI" registry list --project "$PROJECT"
echo "demo: OK, the pipeline pushed its image to the embedded registry and ran in it, twice"
