// Command etcd is the etcd server at the version k8s.io/kubernetes pins.
//
// etcd's own main package lives in the go.etcd.io/etcd/v3 root module, whose
// requirements would lift shared dependencies above the versions Kubernetes
// tested; the server module's entry point is already in our module graph.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
