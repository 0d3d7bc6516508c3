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
// on through a rotation: it reads the rotated file to its end, then the
// new one from its start.
func openLog(ctx context.Context, path string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
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
		fl := &logFollower{path: path, f: f, pending: bytes.Clone(b[whole:])}
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
	if l.rotated() {
		// The monitor renames the file only after its last write to it,
		// and this read comes after the rename was seen: it gets the
		// rest of the file.
		l.readToEnd()
		l.close()
		if l.f, _ = os.Open(l.path); l.f != nil {
			l.readToEnd()
		}
	}
	n := bytes.LastIndexByte(l.pending, '\n') + 1
	lines := bytes.Clone(l.pending[:n])
	l.pending = append(l.pending[:0], l.pending[n:]...)
	return lines
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
