package nodeagent

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The node agent program (Main) has two commands: "run" is the agent;
// "pod-init" is the helper the agent starts every container process
// through: it enters the pod's network namespace, mounts the
// service-account files in its private mount namespace, and runs the
// container's command, staying as its monitor (see monitor).
const (
	runCommand     = "run"
	podInitCommand = "pod-init"
)

// SecretsDir is where pods find their service-account token, CA and
// namespace, as in every Kubernetes pod.
const SecretsDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Main runs the node agent program with its command line: "run [flags]"
// runs the agent until SIGTERM or SIGINT (see Run); "pod-init [flags] --
// ARGV" is how the agent starts container processes. self is the
// command-line prefix that reaches Main in the running executable (for
// the kuberpc CLI, "cluster node-agent"): the agent re-executes itself
// with it to start pod-init. Main returns the exit code.
func Main(self, args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(os.Stderr, "node agent: want a command: %s or %s\n", runCommand, podInitCommand)
		return 2
	}
	switch args[0] {
	case runCommand:
		return runMain(self, args[1:])
	case podInitCommand:
		if err := podInit(args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "kuberpc pod init:", err)
			return 127
		}
		return 0 // not reached: podInit executes the container's command
	default:
		fmt.Fprintf(os.Stderr, "node agent: unknown command %q: want %s or %s\n", args[0], runCommand, podInitCommand)
		return 2
	}
}

// podInitCmd returns the command that runs argv inside the pod network
// namespace nsPath, with tokenDir (when set) mounted at SecretsDir and
// resolvConf (when set) at /etc/resolv.conf, in a mount namespace of its
// own.
func (a *Agent) podInitCmd(nsPath, tokenDir, resolvConf, dir string, files monitorFiles, mounts []volumeMount, argv []string) (*exec.Cmd, error) {
	// /proc/self/exe still runs when the agent's binary was replaced or
	// deleted since it started (`go run`, a rebuild).
	args := append(slices.Clone(a.cfg.Self), podInitCommand, "--netns="+nsPath, "--token-dir="+tokenDir, "--resolv-conf="+resolvConf, "--dir="+dir,
		"--log="+files.log, "--pid-file="+files.pid, "--exit-file="+files.exit,
		"--cgroup="+files.cgroup, "--cgroup-mode="+files.cgroupMode)
	if files.log != "" { // a monitor: it rotates the log
		args = append(args, "--log-max-size="+strconv.FormatInt(files.logMaxSize, 10), "--log-max-files="+strconv.Itoa(files.logMaxFiles))
	}
	for _, m := range mounts {
		args = append(args, "--mount="+m.src+"="+m.dst)
	}
	args = append(args, "--")
	cmd := exec.Command("/proc/self/exe", append(args, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWNS}
	return cmd, nil
}

func podInit(args []string) error {
	fs := flag.NewFlagSet(podInitCommand, flag.ContinueOnError)
	nsPath := fs.String("netns", "", "network namespace to enter")
	tokenDir := fs.String("token-dir", "", "directory to mount at "+SecretsDir)
	resolvConf := fs.String("resolv-conf", "", "file to mount at /etc/resolv.conf")
	dir := fs.String("dir", "", "working directory")
	var files monitorFiles
	fs.StringVar(&files.log, "log", "", "the container log (CRI format); with it, pod init stays as the process's monitor")
	fs.StringVar(&files.pid, "pid-file", "", "where the monitor writes the process's pid")
	fs.StringVar(&files.exit, "exit-file", "", "where the monitor writes how the process ended")
	fs.StringVar(&files.cgroup, "cgroup", "", "the container's cgroup, which the monitor joins")
	fs.StringVar(&files.cgroupMode, "cgroup-mode", "", "v1 or v2")
	fs.Int64Var(&files.logMaxSize, "log-max-size", DefaultContainerLogMaxSize, "bytes in the log before it is rotated")
	fs.IntVar(&files.logMaxFiles, "log-max-files", DefaultContainerLogMaxFiles, "log files kept, the one written to included")
	var mounts []volumeMount
	fs.Func("mount", "SRC=DST: bind directory SRC read-only at DST, under "+secretsRoot, func(v string) error {
		src, dst, ok := strings.Cut(v, "=")
		if !ok {
			return errors.New("want SRC=DST")
		}
		mounts = append(mounts, volumeMount{src: src, dst: dst})
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("no command")
	}
	runtime.LockOSThread() // namespaces are per thread; exec from this one
	if *nsPath != "" {
		ns, err := netns.GetFromPath(*nsPath)
		if err != nil {
			return fmt.Errorf("open network namespace %s: %w", *nsPath, err)
		}
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", *nsPath, err)
		}
	}
	if *tokenDir != "" || *resolvConf != "" || len(mounts) > 0 {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make mounts private: %w", err)
		}
	}
	if *tokenDir != "" || len(mounts) > 0 {
		if err := mountSecrets(*tokenDir, mounts); err != nil {
			return err
		}
	}
	if *resolvConf != "" {
		// Over the file /etc/resolv.conf names (often a symlink into
		// /run), in this pod's mount namespace only.
		if err := unix.Mount(*resolvConf, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s to /etc/resolv.conf: %w", *resolvConf, err)
		}
	}
	if *dir != "" {
		if err := os.Chdir(*dir); err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("executable %q: %w", argv[0], err)
	}
	if files.log != "" {
		if files.cgroup != "" {
			if err := joinCgroup(files.cgroupMode, files.cgroup, os.Getpid()); err != nil {
				return fmt.Errorf("join cgroup %s: %w", files.cgroup, err)
			}
		}
		return monitor(path, argv, files)
	}
	return syscall.Exec(path, argv, os.Environ())
}

// mountSecrets puts a tmpfs on /run/secrets and binds, read-only,
// tokenDir (when set) to SecretsDir and each mount's directory to its
// path under it, so only this pod sees them. The caller has made this
// process's mounts private (it was started in a new mount namespace).
func mountSecrets(tokenDir string, mounts []volumeMount) error {
	base, err := filepath.EvalSymlinks("/var/run")
	if err != nil {
		base = "/var/run"
	}
	secrets := filepath.Join(base, "secrets")
	if err := os.MkdirAll(secrets, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", secrets, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", secrets, err)
	}
	if tokenDir != "" {
		mounts = append([]volumeMount{{src: tokenDir, dst: SecretsDir}}, mounts...)
	}
	for _, m := range mounts {
		rel, ok := strings.CutPrefix(m.dst, secretsRoot+"/")
		if !ok {
			return fmt.Errorf("mount %s: not under %s", m.dst, secretsRoot)
		}
		target := filepath.Join(secrets, rel)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s to %s: %w", m.src, m.dst, err)
		}
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", m.dst, err)
		}
	}
	return nil
}
