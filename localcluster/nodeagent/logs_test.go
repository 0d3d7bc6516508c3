package nodeagent

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// writeLog writes what a monitor would for the lines of stdout, a long
// line in parts, and a raw line from pod init.
func writeLog(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	w := &criWriter{w: &b}
	long := strings.Repeat("x", maxLogLine+10)
	w.copyLines("stdout", strings.NewReader("one\ntwo\n"+long+"\nlast-no-newline"))
	w.write("stderr", "F", []byte("an error"))
	b.WriteString("kuberpc pod init: executable \"nope\": not found\n")
	path := filepath.Join(t.TempDir(), "c.log")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readLog(t *testing.T, path string, opts api.ContainerLogOpts) string {
	t.Helper()
	rc, err := openLog(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLogContent(t *testing.T) {
	path := writeLog(t)
	got := readLog(t, path, api.ContainerLogOpts{})
	long := strings.Repeat("x", maxLogLine+10)
	want := "one\ntwo\n" + long + "\nlast-no-newline\nan error\nkuberpc pod init: executable \"nope\": not found\n"
	if got != want {
		t.Errorf("log = %.200q…; want %.200q…", got, want)
	}
	if got := readLog(t, path, api.ContainerLogOpts{Tail: 2}); got != "an error\nkuberpc pod init: executable \"nope\": not found\n" {
		t.Errorf("tail 2 = %q", got)
	}
	if got := readLog(t, path, api.ContainerLogOpts{LimitBytes: 5}); got != "one\nt" {
		t.Errorf("limit 5 = %q", got)
	}
}

func TestLogTimestamps(t *testing.T) {
	before := time.Now()
	path := writeLog(t)
	got := readLog(t, path, api.ContainerLogOpts{Timestamps: true, Tail: 3})
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines: %q", len(lines), got)
	}
	for _, l := range lines[:2] {
		ts, rest, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(before.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("line %q: timestamp %q (%v) not from this test", l, ts, err)
		}
		if rest != "last-no-newline" && rest != "an error" {
			t.Errorf("line %q: content %q", l, rest)
		}
	}
	if lines[2] != `kuberpc pod init: executable "nope": not found` {
		t.Errorf("a raw line has no time to show; got %q", lines[2])
	}
	if got := readLog(t, path, api.ContainerLogOpts{SinceTime: time.Now().Add(time.Hour)}); got != "kuberpc pod init: executable \"nope\": not found\n" {
		t.Errorf("since an hour ahead = %q; want only the raw line", got)
	}
}

func TestLogFollow(t *testing.T) {
	path := writeLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := openLog(ctx, path, api.ContainerLogOpts{Follow: true, Tail: 1})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := &criWriter{w: f}
	w.write("stdout", "P", []byte("half "))
	w.write("stdout", "F", []byte("and whole"))
	f.Close()
	want := "kuberpc pod init: executable \"nope\": not found\nhalf and whole\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(rc, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("followed %q; want %q", got, want)
	}
	cancel()
}
