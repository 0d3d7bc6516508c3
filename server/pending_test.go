package server

import (
	"context"
	"testing"
)

// TestPendingAdmissions checks the lists the janitor sweeps: every
// admission added is found until it is removed, removing one the janitor
// already took out is harmless, and the lists end empty.
func TestPendingAdmissions(t *testing.T) {
	var p pendingAdmissions
	in := map[*admission]bool{}
	var all []*admission
	for range 200 {
		a := &admission{Context: context.Background()}
		p.add(a)
		in[a] = true
		all = append(all, a)
	}
	count := func() int {
		n := 0
		for i := range p.shards {
			for a := p.shards[i].head; a != nil; a = a.next {
				if !in[a] {
					t.Fatalf("an admission not added, or removed, is listed")
				}
				if a.next != nil && a.next.prev != a {
					t.Fatalf("shard %d: broken back link", i)
				}
				n++
			}
		}
		return n
	}
	if n := count(); n != 200 {
		t.Fatalf("listed %d admissions, want 200", n)
	}
	// Remove every third, from the heads, middles and tails of the shards.
	for i, a := range all {
		if i%3 == 0 {
			p.remove(a)
			delete(in, a)
		}
	}
	if n := count(); n != len(in) {
		t.Fatalf("listed %d admissions after removals, want %d", n, len(in))
	}
	// The janitor's way out, then the interceptor's: the second is a no-op.
	for i, a := range all {
		if i%3 == 1 {
			sh := &p.shards[a.shard]
			sh.mu.Lock()
			p.unlinkLocked(a)
			sh.mu.Unlock()
			delete(in, a)
			p.remove(a)
		}
	}
	if n := count(); n != len(in) {
		t.Fatalf("listed %d admissions after the janitor's removals, want %d", n, len(in))
	}
	for a := range in {
		p.remove(a)
		delete(in, a)
	}
	for i := range p.shards {
		if p.shards[i].head != nil {
			t.Fatalf("shard %d not empty at the end", i)
		}
	}
}
