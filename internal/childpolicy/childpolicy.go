// Package childpolicy parses the "childPolicy" list of a load-balancing
// policy that wraps another, as grpc-go's own wrapping policies do: the
// first policy of the list that is registered is the child.
package childpolicy

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"
)

// Parse returns the first registered policy of list, with its parsed
// configuration (nil when the policy takes none). The error names every
// policy of the list that is not registered when none is, and the
// child's configuration error.
func Parse(list []map[string]json.RawMessage) (name string, cfg serviceconfig.LoadBalancingConfig, err error) {
	if len(list) == 0 {
		return "", nil, fmt.Errorf(`childPolicy: missing (want a list such as [{"round_robin": {}}])`)
	}
	var unknown []string
	for _, m := range list {
		for n, js := range m {
			b := balancer.Get(n)
			if b == nil {
				unknown = append(unknown, n)
			}
			if b == nil || name != "" {
				continue
			}
			name = n
			if p, ok := b.(balancer.ConfigParser); ok {
				if cfg, err = p.ParseConfig(js); err != nil {
					err = fmt.Errorf("childPolicy %s: %w", n, err)
				}
			}
		}
	}
	if name == "" {
		return "", nil, fmt.Errorf("childPolicy: no registered load-balancing policy among %q (is its package imported?)", unknown)
	}
	return name, cfg, err
}
