package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
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
	rc, err := openLog(context.Background(), path, DefaultContainerLogMaxFiles, opts)
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
	rc, err := openLog(ctx, path, DefaultContainerLogMaxFiles, api.ContainerLogOpts{Follow: true, Tail: 1})
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

// TestRotatingLogKeepsMaxFiles: the log is rotated once it holds its
// maximum size, keeps that many files in all, and what they hold, oldest
// first, is the newest records in order, none lost between two files.
func TestRotatingLogKeepsMaxFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	l, err := openRotatingLog(path, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	w := &criWriter{w: l}
	for i := range 200 {
		w.write("stdout", "F", fmt.Appendf(nil, "record %d", i))
	}
	l.Close()
	if _, err := os.Stat(rotatedLog(path, 3)); !os.IsNotExist(err) {
		t.Errorf("%s: %v; want 3 files in all", rotatedLog(path, 3), err)
	}
	var all []string
	for _, f := range []string{rotatedLog(path, 2), rotatedLog(path, 1), path} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 1000+64 {
			t.Errorf("%s holds %d bytes; want at most 1000 and the record that passed it", f, len(b))
		}
		if f != path && !bytes.HasSuffix(b, []byte("\n")) {
			t.Errorf("%s does not end with a whole line", f)
		}
		all = append(all, contents(b)...)
	}
	if len(all) < 40 {
		t.Fatalf("the files hold %d records; want the newest 40 or more", len(all))
	}
	first := 200 - len(all)
	for i, got := range all {
		if want := fmt.Sprintf("record %d", first+i); got != want {
			t.Fatalf("record %d of the files is %q; want %q (the newest, in order)", i, got, want)
		}
	}
}

// TestRotatingLogRefusesNoRotation: a size or a count that cannot rotate
// is named.
func TestRotatingLogRefusesNoRotation(t *testing.T) {
	for _, c := range []struct {
		size  int64
		files int
	}{{0, 5}, {-1, 5}, {1 << 20, 1}, {1 << 20, 0}} {
		if _, err := openRotatingLog(filepath.Join(t.TempDir(), "c.log"), c.size, c.files); err == nil || !strings.Contains(err.Error(), "want a positive size and at least 2 files") {
			t.Errorf("size %d, files %d: %v; want the rule named", c.size, c.files, err)
		}
	}
}

// TestLogFollowThroughRotation: kubectl logs -f goes on through the log's
// rotations and misses no line, as the kubelet's does.
func TestLogFollowThroughRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	l, err := openRotatingLog(path, 4000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := &criWriter{w: l}
	w.write("stdout", "F", []byte("line 0"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := openLog(ctx, path, 2, api.ContainerLogOpts{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	const lines = 500
	go func() {
		// 10 lines every 50ms: a rotation every half second or so,
		// slower than the follower's polls.
		for i := 1; i < lines; i++ {
			w.write("stdout", "F", fmt.Appendf(nil, "line %d", i))
			if i%10 == 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	got := make(chan string, lines)
	go func() {
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			got <- sc.Text()
		}
	}()
	timeout := time.After(30 * time.Second)
	for i := range lines {
		select {
		case line := <-got:
			if want := fmt.Sprintf("line %d", i); line != want {
				t.Fatalf("followed line %d is %q; want %q", i, line, want)
			}
		case <-timeout:
			t.Fatalf("followed %d lines in 30s, want %d (rotated: %v)", i, lines, fileExists(rotatedLog(path, 1)))
		}
	}
}

// contents is what each line of a container log holds.
func contents(log []byte) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(string(log), "\n"), "\n") {
		if line != "" {
			out = append(out, parseLogLine(line).content)
		}
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestLogTimestampsOfALineFollowedInTwoReads: a long line whose parts
// the follower reads in two polls is one line, with one timestamp.
func TestLogTimestampsOfALineFollowedInTwoReads(t *testing.T) {
	r := &logRenderer{timestamps: true}
	var b bytes.Buffer
	w := &criWriter{w: &b}
	w.write("stdout", "P", []byte("half "))
	first := r.render(b.Bytes())
	b.Reset()
	w.write("stdout", "F", []byte("and whole"))
	line := string(first) + string(r.render(b.Bytes()))
	ts, rest, _ := strings.Cut(line, " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || rest != "half and whole\n" {
		t.Errorf("rendered %q; want one timestamp, then \"half and whole\"", line)
	}
}

// TestLogFollowThroughRotationsBetweenPolls: when the log was rotated
// more than once between two polls, the follower reads every file in
// turn, the middle ones too; when the file it was reading was rotated out
// of the kept files, it goes on with the oldest file left.
func TestLogFollowThroughRotationsBetweenPolls(t *testing.T) {
	for _, c := range []struct {
		name      string
		maxFiles  int
		rotations int
		// lost is how many records were deleted with the files rotated
		// out between the polls (none that the follower had open).
		lost bool
	}{
		{"two rotations, three files", 3, 2, false},
		{"three rotations, five files", 5, 3, false},
		{"two rotations, two files: the one read is deleted", 2, 2, false},
		{"three rotations, two files: the middle one is deleted", 2, 3, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.log")
			const size = 500
			l, err := openRotatingLog(path, size, c.maxFiles)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			w := &criWriter{w: l}
			record := 0
			write := func() {
				w.write("stdout", "F", fmt.Appendf(nil, "record %d", record))
				record++
			}
			write()
			fl := &logFollower{path: path, maxFiles: c.maxFiles}
			defer fl.close()
			var got []string
			poll := func() { got = append(got, contents(fl.next())...) }
			poll()
			// Rotations between this poll and the next, then a record
			// in the file written to.
			for rotated := 0; rotated < c.rotations; {
				write()
				if fileExists(rotatedLog(path, 1)) && l.size == 0 {
					rotated++
				}
			}
			write()
			poll()
			if len(got) == 0 || got[0] != "record 0" {
				t.Fatalf("followed %q; want record 0 first", got)
			}
			for i := 1; i < len(got); i++ {
				var prev, n int
				fmt.Sscanf(got[i-1], "record %d", &prev)
				fmt.Sscanf(got[i], "record %d", &n)
				if n <= prev {
					t.Fatalf("followed %q, then %q; want the records in order", got[i-1], got[i])
				}
				if n != prev+1 && !c.lost {
					t.Fatalf("followed %q, then %q: the records between were missed", got[i-1], got[i])
				}
			}
			if last := got[len(got)-1]; last != fmt.Sprintf("record %d", record-1) {
				t.Errorf("followed up to %q; want the newest, record %d", last, record-1)
			}
			if c.lost && len(got) == record {
				t.Errorf("followed all %d records; want those of the file deleted between the polls missing (the test rotated too little)", record)
			}
		})
	}
}

// TestLogFollowRacingRotations: a follower polling while the log is
// written and rotated as fast as it can be, each rotation renaming every
// kept file, reads every record once and in order. The writer keeps no
// more than half the kept files ahead of the follower, so that none is
// rotated out unread (the loss the kubelet has too).
func TestLogFollowRacingRotations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	const maxFiles, records = 20, 10000
	const ahead = 100 // records: 10 or so files of 500 bytes
	l, err := openRotatingLog(path, 500, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := &criWriter{w: l}
	w.write("stdout", "F", []byte("record 0"))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fl := &logFollower{path: path, maxFiles: maxFiles, f: f}
	defer fl.close()
	var followed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < records; i++ {
			for int64(i)-followed.Load() > ahead {
				runtime.Gosched()
			}
			w.write("stdout", "F", fmt.Appendf(nil, "record %d", i))
		}
	}()
	defer func() {
		followed.Store(records)
		<-done
	}()
	next, written := 0, false
	for next < records {
		select {
		case <-done:
			written = true
		default:
		}
		lines := fl.next()
		for _, got := range contents(lines) {
			if want := fmt.Sprintf("record %d", next); got != want {
				t.Fatalf("followed %q; want %q", got, want)
			}
			next++
		}
		followed.Store(int64(next))
		if written && len(lines) == 0 && next < records {
			t.Fatalf("followed %d of %d records, and nothing more after the last was written", next, records)
		}
	}
}
