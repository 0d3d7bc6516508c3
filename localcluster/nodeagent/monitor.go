package nodeagent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// exitStatus is how a container's process ended, as its monitor records
// it in the container's exit file.
type exitStatus struct {
	ExitCode   int32     `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// exitStatusOf is how a process ended, from its Wait error: its exit
// code, or 128 + the signal that killed it.
func exitStatusOf(waitErr error) exitStatus {
	st := exitStatus{FinishedAt: time.Now().UTC()}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = int(ws.Signal())
			st.ExitCode = 128 + int32(st.Signal)
		} else {
			st.ExitCode = int32(ee.ExitCode())
		}
	} else if waitErr != nil {
		st.ExitCode = 128
	}
	return st
}

// monitorFiles are where a container's monitor keeps what outlives the
// agent: the process's output, its pid and how it ended.
type monitorFiles struct {
	log, pid, exit string
	// cgroup the monitor joins before it starts the process ("" none),
	// in cgroupMode's mode.
	cgroup, cgroupMode string
	// logMaxSize and logMaxFiles rotate the log as the kubelet's
	// containerLogMaxSize and containerLogMaxFiles do (see rotatingLog).
	logMaxSize  int64
	logMaxFiles int
}

// monitor runs path/argv as the container's process and stays as its
// parent, as containerd's shim does, so that the container outlives a
// restart of the node agent: it writes the process's output to the log
// in the CRI format (a timestamp and stream per line: kubectl logs
// --timestamps), its pid to the pid file, and how it ended to the exit
// file, where an agent that adopted the container after a restart reads
// it. The monitor ignores the signals the agent sends the pod's process
// group (the process gets them) and ends as its process did: the same
// exit code, or killed by the same signal.
func monitor(path string, argv []string, files monitorFiles) error {
	logf, err := openRotatingLog(files.log, files.logMaxSize, files.logMaxFiles)
	if err != nil {
		return err
	}
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT)
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = os.Environ()
	// Pipes of our own, not exec's StdoutPipe: Wait closes those once
	// the process has exited, and output it wrote just before was lost
	// (a process that prints a line and exits lost it in 1 run of 10).
	// These are read to their end, or, when a daemonised grandchild holds
	// them, for 2 s after the exit.
	stdout, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	stderr, errW, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close() // the process has its own copies
	errW.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	if err := os.WriteFile(files.pid, fmt.Appendf(nil, "%d\n", cmd.Process.Pid), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "kuberpc pod init: pid file: %v\n", err)
	}
	w := &criWriter{w: logf}
	var copies sync.WaitGroup
	for stream, r := range map[string]io.Reader{"stdout": stdout, "stderr": stderr} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			w.copyLines(stream, r)
		}()
	}
	// The pipes close when the process and every child that inherited
	// them have exited; a daemonised grandchild must not hold the exit.
	copied := make(chan struct{})
	go func() {
		copies.Wait()
		close(copied)
	}()
	waitErr := cmd.Wait()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	st := exitStatusOf(waitErr)
	b, _ := json.Marshal(st)
	if err := os.WriteFile(files.exit, b, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "kuberpc pod init: exit file: %v\n", err)
	}
	if st.Signal != 0 {
		sig := syscall.Signal(st.Signal)
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig)
		time.Sleep(time.Second) // the signal ends the process here
	}
	os.Exit(int(st.ExitCode))
	return nil
}

// criWriter writes lines in the CRI log format: "TIMESTAMP STREAM TAG
// CONTENT", TAG F for a full line and P for part of a longer one.
type criWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// maxLogLine is the longest part of a line written as one record.
const maxLogLine = 16 << 10

func (c *criWriter) copyLines(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			tag := "P"
			if line[len(line)-1] == '\n' {
				tag, line = "F", line[:len(line)-1]
			} else if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				tag = "F" // the last line, without its newline
			}
			c.write(stream, tag, line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (c *criWriter) write(stream, tag string, content []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := make([]byte, 0, len(content)+48)
	b = time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ')
	b = append(b, tag...)
	b = append(b, ' ')
	b = append(b, content...)
	b = append(b, '\n')
	_, _ = c.w.Write(b)
}

// rotatingLog is a container log rotated as the kubelet rotates one:
// once the file holds maxSize bytes, it is renamed to path.1 (path.1 to
// path.2, and so on: maxFiles files in all, the oldest dropped) and a new
// one begun at path. kubectl logs reads the file at path, as the
// kubelet's does, so neither the disk nor a read of the log grows with
// how long the container has run. Records are written whole (criWriter
// writes each in one Write), so every file ends with a whole line.
type rotatingLog struct {
	path     string
	maxSize  int64
	maxFiles int
	f        *os.File
	size     int64
}

// checkLogRotation refuses a size or a count of files that cannot
// rotate a log.
func checkLogRotation(maxSize int64, maxFiles int) error {
	if maxSize <= 0 || maxFiles < 2 {
		return fmt.Errorf("max size %d, max files %d: want a positive size and at least 2 files", maxSize, maxFiles)
	}
	return nil
}

// openRotatingLog opens (appending) or creates the log at path.
func openRotatingLog(path string, maxSize int64, maxFiles int) (*rotatingLog, error) {
	if err := checkLogRotation(maxSize, maxFiles); err != nil {
		return nil, fmt.Errorf("log rotation: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &rotatingLog{path: path, maxSize: maxSize, maxFiles: maxFiles, f: f, size: st.Size()}, nil
}

// rotatedLog is the name of the nth newest rotated file of the log at path.
func rotatedLog(path string, n int) string { return path + "." + strconv.Itoa(n) }

// Write appends b and rotates the log once it holds maxSize bytes. When
// rotation fails (the disk, a rename), the log goes on in the same file:
// output is not lost for it.
func (l *rotatingLog) Write(b []byte) (int, error) {
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err == nil && l.size >= l.maxSize {
		if rerr := l.rotate(); rerr != nil {
			fmt.Fprintf(os.Stderr, "kuberpc pod init: rotate %s: %v\n", l.path, rerr)
		}
	}
	return n, err
}

func (l *rotatingLog) rotate() error {
	for i := l.maxFiles - 1; i > 1; i-- {
		if err := os.Rename(rotatedLog(l.path, i-1), rotatedLog(l.path, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(l.path, rotatedLog(l.path, 1)); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err // the renamed file is still open: the log goes on there
	}
	l.f.Close()
	l.f, l.size = f, 0
	return nil
}

// Close closes the log's file.
func (l *rotatingLog) Close() error { return l.f.Close() }

// logRecord is one line of a container log: a CRI record, or a raw line
// (what pod init wrote before the monitor started), whose time is zero.
type logRecord struct {
	at      time.Time
	stream  string
	partial bool
	content string
}

// parseLogLine parses one line of a container log.
func parseLogLine(line string) logRecord {
	f := strings.SplitN(line, " ", 4)
	if len(f) == 4 && (f[1] == "stdout" || f[1] == "stderr") && (f[2] == "F" || f[2] == "P") {
		if at, err := time.Parse(time.RFC3339Nano, f[0]); err == nil {
			return logRecord{at: at, stream: f[1], partial: f[2] == "P", content: f[3]}
		}
	}
	return logRecord{content: line}
}
