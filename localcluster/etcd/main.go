// Command etcd is the etcd server of the kuberpc local cluster, built from
// go.etcd.io/etcd/server/v3 in its own module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
