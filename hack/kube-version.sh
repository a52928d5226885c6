# Sourced by hack/build-controlplane.sh and hack/build-node.sh: the Kubernetes version built from
# k8s.io/kubernetes, and the ldflags that stamp it into the binaries (as upstream's build does).
k8s_version=1.37.2
kube_ldflags="-s -w"
for kv in "gitVersion=v${k8s_version}" "gitMajor=${k8s_version%%.*}" \
  "gitMinor=$(echo "$k8s_version" | cut -d. -f2)" "gitTreeState=clean" \
  "buildDate=1970-01-01T00:00:00Z"; do
  kube_ldflags+=" -X k8s.io/component-base/version.$kv"
done
