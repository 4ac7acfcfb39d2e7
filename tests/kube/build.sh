#!/usr/bin/env bash
# Builds the test control plane once into $KUBE_HOME/bin (default /opt/mlmanager/kube):
# kube-apiserver, kube-controller-manager and kube-scheduler (apiserver/go.mod pins k8s.io/kubernetes and
# its staging modules), etcd (etcd/go.mod) and kwok with its Stage definitions.
# Skips the build when the stamp matches the inputs (these files and the Go version).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KUBE_HOME="${KUBE_HOME:-/opt/mlmanager/kube}"
KUBERNETES_VERSION=v1.37.2
KWOK_VERSION=v0.8.0
export GOFLAGS="${GOFLAGS:--p=2}"
command -v go >/dev/null || { echo "kube: Go 1.26 or newer is needed (go not found)"; exit 1; }

stamp="$( (go version; cat "$0" "$here"/apiserver/go.{mod,sum} "$here"/apiserver/*.go \
  "$here"/etcd/go.{mod,sum} "$here"/etcd/*.go) | sha256sum | cut -d' ' -f1)"
if [ -f "$KUBE_HOME/.stamp" ] && [ "$(cat "$KUBE_HOME/.stamp")" = "$stamp" ]; then
  echo "kube: control plane up to date in $KUBE_HOME"; exit 0
fi

start=$SECONDS
rm -rf "$KUBE_HOME/stages"
mkdir -p "$KUBE_HOME/bin" "$KUBE_HOME/stages"
rm -f "$KUBE_HOME/.stamp"
version="k8s.io/component-base/version"
ldflags="-s -w -X $version.gitVersion=$KUBERNETES_VERSION -X $version.gitMajor=1 \
  -X $version.gitMinor=37 -X $version.gitTreeState=clean"
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  echo "kube: building $cmd $KUBERNETES_VERSION"
  (cd "$here/apiserver" && go build -ldflags "$ldflags" -o "$KUBE_HOME/bin/$cmd" \
    "k8s.io/kubernetes/cmd/$cmd")
done
echo "kube: building etcd"
(cd "$here/etcd" && go build -ldflags "-s -w" -o "$KUBE_HOME/bin/etcd" .)
echo "kube: building kwok $KWOK_VERSION"
GOBIN="$KUBE_HOME/bin" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# kwok moves pods and nodes through these Stages (they ship in its module, not its binary).
stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready \
  pod/fast/pod-complete pod/fast/pod-delete; do
  echo "---"; cat "$stages/$f.yaml"
done > "$KUBE_HOME/stages/stages.yaml"
echo "$stamp" > "$KUBE_HOME/.stamp"
echo "kube: built in $((SECONDS - start)) s into $KUBE_HOME"
