package server

import (
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestReviewClientIsNotRateLimited: the TokenReview client has no
// client-side rate limit, which by default (5 a second, bursts of 10)
// would queue a new replica's first reviews behind one another for
// seconds; the reviewer bounds its reviews in flight instead.
func TestReviewClientIsNotRateLimited(t *testing.T) {
	in := &rest.Config{Host: "https://198.18.0.1:6443"}
	plain, err := kubernetes.NewForConfig(in)
	if err != nil {
		t.Fatal(err)
	}
	if plain.AuthenticationV1().RESTClient().GetRateLimiter() == nil {
		t.Fatal("client-go's default config has no rate limiter; this test means nothing")
	}
	cs, err := kubernetes.NewForConfig(reviewConfig(in))
	if err != nil {
		t.Fatal(err)
	}
	if rl := cs.AuthenticationV1().RESTClient().GetRateLimiter(); rl != nil {
		t.Errorf("the review client has a rate limiter (%.0f a second)", rl.QPS())
	}
	if in.QPS != 0 {
		t.Errorf("reviewConfig changed the config it was given")
	}
}
