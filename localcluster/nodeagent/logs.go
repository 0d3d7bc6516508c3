package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// openLog returns the container log at path (CRI format, see monitor) as
// kubectl logs shows it, with its options: since, timestamps, tail lines,
// byte limit, and follow (polling for new output until ctx ends). As the
// kubelet's, it reads the file being written, not those rotated before
// it (see rotatingLog), which bounds what it holds in memory; follow goes
// on through the rotations of a log kept in maxFiles files: it reads each
// file to its end, then the one begun after it from its start.
func openLog(ctx context.Context, path string, maxFiles int, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var b []byte
	if f != nil {
		if b, err = io.ReadAll(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	r := &logRenderer{since: since, timestamps: opts.Timestamps}
	// Only whole lines now; follow picks up the rest.
	whole := bytes.LastIndexByte(b, '\n') + 1
	out := r.render(b[:whole])
	if opts.Tail > 0 {
		lines := bytes.SplitAfter(out, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		if len(lines) > opts.Tail {
			lines = lines[len(lines)-opts.Tail:]
		}
		out = bytes.Join(lines, nil)
	}
	if opts.LimitBytes > 0 && len(out) > opts.LimitBytes {
		out = out[:opts.LimitBytes]
	}
	if !opts.Follow {
		if f != nil {
			f.Close()
		}
		return io.NopCloser(bytes.NewReader(out)), nil
	}
	pr, pw := io.Pipe()
	go func() {
		fl := &logFollower{path: path, maxFiles: maxFiles, f: f, pending: bytes.Clone(b[whole:])}
		defer fl.close()
		if _, err := pw.Write(out); err != nil {
			return
		}
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				pw.Close()
				return
			case <-t.C:
			}
			if more := fl.next(); len(more) > 0 {
				if _, err := pw.Write(r.render(more)); err != nil {
					return
				}
			}
		}
	}()
	return pr, nil
}

// logFollower reads what is added to a container log, through its
// rotations.
type logFollower struct {
	path string
	// maxFiles is how many files the log is kept in (rotatingLog's).
	maxFiles int
	// f is the file being read, open from where the last read ended: it
	// stays the same file when the log is rotated (renamed) under it.
	f *os.File
	// pending is the start of a line read but not yet whole.
	pending []byte
}

// next returns the whole lines added since the last call.
func (l *logFollower) next() []byte {
	if l.f == nil {
		if l.f, _ = os.Open(l.path); l.f == nil {
			return nil // not written yet, or being rotated
		}
	}
	l.readToEnd()
	for l.rotated() {
		// The monitor renames a file only after its last write to it,
		// and this read comes after the rename was seen: it gets the
		// rest of the file. More than one rotation may have come
		// between two polls: each file is read in turn.
		l.readToEnd()
		next := l.successor()
		if next == nil {
			break // a rotation is under way: the next poll goes on
		}
		l.f.Close()
		l.f = next
		l.readToEnd()
	}
	n := bytes.LastIndexByte(l.pending, '\n') + 1
	lines := bytes.Clone(l.pending[:n])
	l.pending = append(l.pending[:0], l.pending[n:]...)
	return lines
}

// name is the log's file k: the one written to (0), else its kth newest
// rotated file.
func (l *logFollower) name(k int) string {
	if k == 0 {
		return l.path
	}
	return rotatedLog(l.path, k)
}

// successor opens the file the log went on in after the one being read,
// which was rotated. That one is now file k (k ≥ 1) and its successor is
// file k-1. A rotation renames files only to higher numbers, so a scan
// upward finds it; file k naming it still after file k-1 is opened shows
// that no rotation came between. When it is no longer on disk (rotated
// out of the maxFiles), its successor is the oldest file left: what came
// between, if anything, was deleted, as the kubelet deletes it. successor
// returns nil while a rotation is under way.
func (l *logFollower) successor() *os.File {
	read, err := l.f.Stat()
	if err != nil {
		return nil
	}
	isRead := func(k int) bool {
		st, err := os.Stat(l.name(k))
		return err == nil && os.SameFile(read, st)
	}
	for k := 1; k < l.maxFiles; k++ {
		if !isRead(k) {
			continue
		}
		next, err := os.Open(l.name(k - 1))
		if err != nil {
			return nil
		}
		if !isRead(k) {
			next.Close()
			return nil
		}
		return next
	}
	for k := l.maxFiles - 1; k >= 0; k-- {
		if next, err := os.Open(l.name(k)); err == nil {
			return next
		}
	}
	return nil
}

func (l *logFollower) readToEnd() {
	more, _ := io.ReadAll(l.f)
	l.pending = append(l.pending, more...)
}

// rotated reports whether the path no longer names the file being read.
func (l *logFollower) rotated() bool {
	open, err := l.f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(l.path)
	return err != nil || !os.SameFile(open, now)
}

func (l *logFollower) close() {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// logRenderer turns whole CRI log lines into what kubectl logs prints:
// the content, joined across partial records, prefixed with its time
// when timestamps is set, and none written before since. It remembers
// across calls whether the last record was partial, so a followed line
// split between two reads comes out as one.
type logRenderer struct {
	since      time.Time
	timestamps bool
	partial    bool
}

func (r *logRenderer) render(b []byte) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rec := parseLogLine(sc.Text())
		if !r.since.IsZero() && !rec.at.IsZero() && rec.at.Before(r.since) {
			continue
		}
		if r.timestamps && !r.partial && !rec.at.IsZero() {
			out.WriteString(rec.at.Format(time.RFC3339Nano))
			out.WriteByte(' ')
		}
		out.WriteString(rec.content)
		r.partial = rec.partial
		if !r.partial {
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
