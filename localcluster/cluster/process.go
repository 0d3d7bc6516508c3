package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one control-plane process the cluster started, known by its
// pid file so that a later `down` from another process can stop it.
type process struct {
	name string
	path string
	args []string
	env  []string
}

func (c *Cluster) pidFile(name string) string { return filepath.Join(c.StateDir, "run", name+".pid") }

// LogFile is where the named component writes its output.
func (c *Cluster) LogFile(name string) string { return filepath.Join(c.StateDir, "logs", name+".log") }

// start runs p detached (own session, output to its log file) and records
// its pid. The process outlives the caller.
func (c *Cluster) start(p process) (int, error) {
	logf, err := os.OpenFile(c.LogFile(p.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", p.name, err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() // reap it if it exits while we are still running
	return pid, os.WriteFile(c.pidFile(p.name), []byte(strconv.Itoa(pid)), 0o644)
}

// pid returns the recorded pid of name if that process is alive.
func (c *Cluster) pid(name string) (int, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid)
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie is not alive.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// stop sends SIGTERM to name's process group, waits up to grace for it to
// exit, then SIGKILLs it, and removes the pid file.
func (c *Cluster) stop(name string, grace time.Duration) error {
	defer os.Remove(c.pidFile(name))
	pid, ok := c.pid(name)
	if !ok {
		return nil
	}
	// Each component leads its own session and process group.
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for range 100 {
		if !alive(pid) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New(name + " did not exit after SIGKILL")
}
