package attempts

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

func self(s *string) string { return *s }

func TestUntried(t *testing.T) {
	eps := []string{"a", "b", "c"}
	for _, tc := range []struct {
		tried []string
		want  []string
	}{
		{nil, eps},                          // nothing tried
		{[]string{"b"}, []string{"a", "c"}}, // the others, in order
		{[]string{"c", "a"}, []string{"b"}},
		{[]string{"x"}, eps},           // an endpoint gone since
		{[]string{"a", "b", "c"}, eps}, // every one tried: all again
		{[]string{"c", "x", "a"}, []string{"b"}},
	} {
		tr := &Tried{}
		for _, k := range tc.tried {
			tr.Add(k)
		}
		if got := Untried(tr, eps, self); !slices.Equal(got, tc.want) {
			t.Errorf("tried %v: Untried = %v; want %v", tc.tried, got, tc.want)
		}
	}
	if got := Untried(nil, eps, self); !slices.Equal(got, eps) {
		t.Errorf("no Tried: Untried = %v; want %v", got, eps)
	}
	if got := Untried(&Tried{}, eps, self); &got[0] != &eps[0] {
		t.Error("nothing tried: Untried copied the endpoints; want eps itself")
	}
}

func TestAddRecordsOnce(t *testing.T) {
	tr := &Tried{}
	tr.Add("a")
	tr.Add("a")
	if !tr.Has("a") || tr.Has("b") || len(tr.keys) != 1 {
		t.Errorf("after Add(a) twice: keys %v; want [a]", tr.keys)
	}
}

// TestConcurrentPicks: hedged attempts record their picks at once.
func TestConcurrentPicks(t *testing.T) {
	tr := FromContext(NewContext(context.Background()))
	var wg sync.WaitGroup
	for _, k := range []string{"a", "b", "c", "d"} {
		wg.Go(func() {
			Untried(tr, []string{"a", "b", "c", "d"}, self)
			tr.Add(k)
		})
	}
	wg.Wait()
	for _, k := range []string{"a", "b", "c", "d"} {
		if !tr.Has(k) {
			t.Errorf("%s not recorded", k)
		}
	}
}

func TestContext(t *testing.T) {
	if FromContext(context.Background()) != nil || FromContext(nil) != nil { // nil: what a picker may be given outside grpc-go
		t.Error("FromContext of a context without a Tried is not nil")
	}
	type other struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), other{}, "v"))
	ctx := NewContext(parent)
	tr := FromContext(ctx)
	if tr == nil {
		t.Fatal("NewContext carries no Tried")
	}
	if FromContext(NewContext(ctx)) != tr {
		t.Error("NewContext of a context with a Tried made another; a hedge's attempts must share one")
	}
	if tr.Stream() || !FromContext(NewStreamContext(parent)).Stream() {
		t.Error("NewContext's Tried says stream, or NewStreamContext's does not")
	}
	if ctx.Value(other{}) != "v" {
		t.Error("the parent's values are lost")
	}
	child, cancelChild := context.WithCancel(ctx)
	defer cancelChild()
	cancel()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the parent did not reach a context derived from NewContext's")
	}
}
