package nodeagent

import (
	"bytes"
	"context"
	"io"
	"os"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// openLog returns the container log at path with kubectl's options: tail
// lines, byte limit, and follow (polling for new output until ctx ends).
func openLog(ctx context.Context, path string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if opts.Tail > 0 {
		lines := bytes.SplitAfter(b, []byte("\n"))
		if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		if len(lines) > opts.Tail {
			lines = lines[len(lines)-opts.Tail:]
		}
		b = bytes.Join(lines, nil)
	}
	if opts.LimitBytes > 0 && len(b) > opts.LimitBytes {
		b = b[:opts.LimitBytes]
	}
	if !opts.Follow {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	offset := int64(0)
	if st, err := os.Stat(path); err == nil {
		offset = st.Size()
	}
	pr, pw := io.Pipe()
	go func() {
		if _, err := pw.Write(b); err != nil {
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
			if _, err := f.Seek(offset, io.SeekStart); err == nil {
				n, _ := io.Copy(pw, f)
				offset += n
			}
			f.Close()
		}
	}()
	return pr, nil
}
