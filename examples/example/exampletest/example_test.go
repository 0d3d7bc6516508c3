package exampletest_test

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/kuberpc/kuberpc/examples/example/exampletest"
)

// Build the C++ example (once; later calls take the cached build) and run
// its client against a server.
func ExampleBuild() {
	progs, err := exampletest.Build(context.Background(), "cpp")
	if err != nil {
		fmt.Println(err) // names the Debian package of a missing toolchain
		return
	}
	out, err := exec.Command(progs.Client[0], append(progs.Client[1:], "127.0.0.1:50051", "C++")...).CombinedOutput()
	fmt.Println(string(out), err)
}
