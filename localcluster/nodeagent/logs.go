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
// byte limit, and follow (polling for new output until ctx ends).
func openLog(ctx context.Context, path string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var b []byte
	if f != nil {
		b, err = io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	// Only whole lines now; follow picks up the rest.
	offset := int64(bytes.LastIndexByte(b, '\n') + 1)
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	out := renderLog(b[:offset], since, opts.Timestamps)
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
		return io.NopCloser(bytes.NewReader(out)), nil
	}
	pr, pw := io.Pipe()
	go func() {
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
			f, err := os.Open(path)
			if err != nil {
				continue
			}
			var more []byte
			if _, err := f.Seek(offset, io.SeekStart); err == nil {
				more, _ = io.ReadAll(f)
			}
			f.Close()
			n := bytes.LastIndexByte(more, '\n') + 1
			if n == 0 {
				continue
			}
			offset += int64(n)
			if _, err := pw.Write(renderLog(more[:n], since, opts.Timestamps)); err != nil {
				return
			}
		}
	}()
	return pr, nil
}

// renderLog turns whole CRI log lines into what kubectl logs prints:
// the content, joined across partial records, prefixed with its time
// when timestamps is set, and none written before since.
func renderLog(b []byte, since time.Time, timestamps bool) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	partial := false
	for sc.Scan() {
		r := parseLogLine(sc.Text())
		if !since.IsZero() && !r.at.IsZero() && r.at.Before(since) {
			continue
		}
		if timestamps && !partial && !r.at.IsZero() {
			out.WriteString(r.at.Format(time.RFC3339Nano))
			out.WriteByte(' ')
		}
		out.WriteString(r.content)
		partial = r.partial
		if !partial {
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
