package security_test

import (
	"context"
	"fmt"

	"github.com/kuberpc/kuberpc/security"
)

// A policy allows each method to the ServiceAccounts it names; every
// other call is denied.
func ExampleParsePolicy() {
	authz, err := security.ParsePolicy([]byte(`
rules:
- methods: ["/example.ExampleService/SayHello"]
  callers: ["default/frontend", "batch/*"]
`))
	if err != nil {
		panic(err)
	}
	frontend := security.Caller{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "frontend"}
	fmt.Println(authz.Allowed(frontend, "/example.ExampleService/SayHello"))
	fmt.Println(authz.Allowed(frontend, "/example.StreamService/Chat"))
	// Output:
	// true
	// false
}

// A handler reads the identity the server authenticated.
func ExampleCallerFrom() {
	handler := func(ctx context.Context) string {
		caller, ok := security.CallerFrom(ctx)
		if !ok {
			return "anonymous"
		}
		return caller.Namespace + "/" + caller.ServiceAccount
	}
	c, _ := security.ParseSPIFFEID("spiffe://cluster.local/ns/default/sa/frontend")
	fmt.Println(handler(security.NewContext(context.Background(), c)))
	fmt.Println(handler(context.Background()))
	// Output:
	// default/frontend
	// anonymous
}
