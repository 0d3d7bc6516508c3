// Package repocheck holds tests about the repository itself rather than
// one package: rules every file must keep.
package repocheck

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// privateRanges are the RFC 1918 ranges that no test, benchmark or demo
// may send traffic to: the development machines' own networks may use
// them. The local cluster's pods and Services live in 198.18.0.0/15.
var privateRanges = []netip.Prefix{ // private-range: not dialed
	netip.MustParsePrefix("10.0.0.0/8"),     // private-range: not dialed
	netip.MustParsePrefix("172.16.0.0/12"),  // private-range: not dialed
	netip.MustParsePrefix("192.168.0.0/16"), // private-range: not dialed
}

var ipv4 = regexp.MustCompile(`\b(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\b`)

// allowMarker on a line says the address is named to be avoided, not
// dialed (as in this file).
const allowMarker = "private-range: not dialed"

// repoFiles returns the repository's root and its files (tracked or new,
// not ignored; those deleted in the working tree included), relative to
// the root, that match pathspecs (all when none); it skips the test
// outside a git checkout.
func repoFiles(t *testing.T, pathspecs ...string) (string, []string) {
	t.Helper()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skip("not in a git checkout:", err)
	}
	dir := strings.TrimSpace(string(root))
	out, err := exec.Command("git", append([]string{"-C", dir, "ls-files", "--cached", "--others", "--exclude-standard", "--"}, pathspecs...)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return dir, strings.Fields(string(out))
}

// TestNoPrivateRangeAddresses fails when a source, script, manifest or
// test file of the repository names an address in a private range, so
// that nothing the repository runs can dial one. (The local cluster's
// ClusterIP range was once in 10/8.)
func TestNoPrivateRangeAddresses(t *testing.T) {
	dir, files := repoFiles(t)
	checked := 0
	for _, f := range files {
		switch filepath.Ext(f) {
		case ".go", ".sh", ".py", ".yaml", ".yml", ".txtar", ".json", ".cc", ".h", ".java", ".txt":
		default:
			if !strings.HasPrefix(f, ".ci/") {
				continue
			}
		}
		if strings.HasSuffix(f, "go.sum.txt") || strings.HasSuffix(f, "go.mod.txt") {
			continue
		}
		checked++
		checkFile(t, filepath.Join(dir, f), f)
	}
	if checked < 50 {
		t.Fatalf("checked only %d files; the file list is wrong", checked)
	}
}

// formatted matches addresses built with a format verb, as in
// fmt.Sprintf("10.%d.0.1", i). // private-range: not dialed
var formatted = regexp.MustCompile(`"(10|172\.(1[6-9]|2\d|3[01])|192\.168)\.(\d{1,3}\.)*%`) // private-range: not dialed

func checkFile(t *testing.T, path, name string) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return // deleted in the working tree
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findPrivate(string(b)) {
		t.Errorf("%s:%s; use the local cluster's 198.18.0.0/15 or loopback", name, f)
	}
}

// findPrivate returns "line: why" for each private-range address in src.
func findPrivate(src string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.Contains(line, allowMarker) {
			continue
		}
		if m := formatted.FindString(line); m != "" {
			out = append(out, fmt.Sprintf("%d: %s...: an address formatted in a private range", n, m))
		}
		for _, m := range ipv4.FindAllStringSubmatch(line, -1) {
			addr, err := netip.ParseAddr(m[1])
			if err != nil {
				continue // not an address (1.2.300.4)
			}
			for _, p := range privateRanges {
				if p.Contains(addr) {
					out = append(out, fmt.Sprintf("%d: %s is in the private range %s", n, addr, p))
				}
			}
		}
	}
	return out
}

func TestFindPrivate(t *testing.T) {
	src := "a := \"10.96.0.1\"\nb := \"198.19.0.1\"\nc := \"192.168.1.1:80\"\nd := fmt.Sprintf(\"172.20.%d.1\", i)\ne := \"10.0.0.1\" // " + allowMarker + "\nf := \"v1.2.3.4\"\n" // private-range: not dialed
	got := findPrivate(src)
	want := []string{
		"1: 10.96.0.1 is in the private range 10.0.0.0/8",           // private-range: not dialed
		"3: 192.168.1.1 is in the private range 192.168.0.0/16",     // private-range: not dialed
		"4: \"172.20.%...: an address formatted in a private range", // private-range: not dialed
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("findPrivate found\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
