package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The node agent provides two kinds of volume beside the default
// service-account token, the two a workload needs for kuberpc's
// security (package security):
//
//   - projected volumes of serviceAccountToken sources: a token for the
//     source's audience, bound to the pod, from the TokenRequest API,
//     refreshed at 80 % of its lifetime, as the kubelet does;
//   - CSI volumes of cert-manager's csi-driver-spiffe
//     (SPIFFEDriver): tls.crt, tls.key and ca.crt, a certificate whose
//     only name is the pod's SPIFFE ID,
//     spiffe://<cluster domain>/ns/<namespace>/sa/<service account>,
//     from the cluster's workload CA, renewed at 2/3 of its lifetime, as
//     the driver does.
//
// A container mounts them read-only at a path under /var/run/secrets (the
// pod's private tmpfs); other volume types and paths are refused, naming
// the volume, so the pod fails to start instead of running without them.

// SPIFFEDriver is the CSI driver name of cert-manager's csi-driver-spiffe,
// whose volumes the node agent serves from the workload CA.
const SPIFFEDriver = "spiffe.csi.cert-manager.io"

// secretsRoot is where containers may mount the volumes the agent provides.
const secretsRoot = "/var/run/secrets"

// DefaultWorkloadCertTTL is the lifetime of workload certificates, as
// csi-driver-spiffe's default.
const DefaultWorkloadCertTTL = time.Hour

func (p *podRun) volumeDir(name string) string { return filepath.Join(p.dir, "volumes", name) }

// volumeMount is a directory of the pod bound at a path in a container.
type volumeMount struct{ src, dst string }

// mounts returns the volumes c mounts, checked.
func (p *podRun) mounts(c corev1.Container) ([]volumeMount, error) {
	vols := map[string]corev1.Volume{}
	for _, v := range p.pod.Spec.Volumes {
		vols[v.Name] = v
	}
	var out []volumeMount
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: the pod has no such volume", m.Name)
		}
		dst := path.Clean(m.MountPath)
		if dst == SecretsDir {
			// The API access volume the ServiceAccount admission plugin
			// adds: the agent mounts the pod's token there itself.
			continue
		}
		if err := supported(v); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(dst, secretsRoot+"/") || strings.HasPrefix(dst, SecretsDir+"/") {
			return nil, fmt.Errorf("volumeMount %s at %s: the local cluster's node agent mounts volumes only under %s (not at %s)", m.Name, m.MountPath, secretsRoot, SecretsDir)
		}
		if m.SubPath != "" {
			return nil, fmt.Errorf("volumeMount %s: subPath is not supported by the local cluster's node agent", m.Name)
		}
		out = append(out, volumeMount{src: p.volumeDir(v.Name), dst: dst})
	}
	return out, nil
}

func supported(v corev1.Volume) error {
	switch {
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken == nil {
				return fmt.Errorf("volume %s: the local cluster's node agent projects serviceAccountToken sources only", v.Name)
			}
			if p := path.Clean(s.ServiceAccountToken.Path); p != s.ServiceAccountToken.Path || strings.Contains(p, "/") || p == "." || p == ".." {
				return fmt.Errorf("volume %s: token path %q must be a plain file name", v.Name, s.ServiceAccountToken.Path)
			}
		}
		return nil
	case v.CSI != nil && v.CSI.Driver == SPIFFEDriver:
		return nil
	case v.CSI != nil:
		return fmt.Errorf("volume %s: CSI driver %s is not served by the local cluster (only %s)", v.Name, v.CSI.Driver, SPIFFEDriver)
	}
	return fmt.Errorf("volume %s: the local cluster's node agent provides projected serviceAccountToken and csi %s volumes only", v.Name, SPIFFEDriver)
}

// provideVolumes fills every volume of the pod that a container mounts and
// keeps them fresh until the pod's context ends.
func (a *Agent) provideVolumes(ctx context.Context, p *podRun) error {
	pod := p.pod
	mounted := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		ms, err := p.mounts(c)
		if err != nil {
			return err
		}
		for _, m := range ms {
			mounted[filepath.Base(m.src)] = true
		}
	}
	for _, v := range pod.Spec.Volumes {
		if !mounted[v.Name] {
			continue
		}
		dir := p.volumeDir(v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				src := *s.ServiceAccountToken
				refresh, err := a.projectAudienceToken(ctx, pod, dir, src)
				if err != nil {
					return fmt.Errorf("volume %s: %w", v.Name, err)
				}
				go a.keepFresh(p.ctx, pod, "token of volume "+v.Name, refresh, func(ctx context.Context) (time.Time, error) {
					return a.projectAudienceToken(ctx, pod, dir, src)
				})
			}
		case v.CSI != nil:
			refresh, err := a.issueWorkloadCert(pod, dir)
			if err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
			go a.keepFresh(p.ctx, pod, "certificate of volume "+v.Name, refresh, func(context.Context) (time.Time, error) {
				return a.issueWorkloadCert(pod, dir)
			})
		}
	}
	return nil
}

// projectAudienceToken writes the pod's token for src's audience and
// returns when to renew it.
func (a *Agent) projectAudienceToken(ctx context.Context, pod *corev1.Pod, dir string, src corev1.ServiceAccountTokenProjection) (time.Time, error) {
	secs := int64(tokenLifetime.Seconds()) // the API's default expirationSeconds
	if src.ExpirationSeconds != nil {
		secs = *src.ExpirationSeconds
	}
	var audiences []string
	if src.Audience != "" {
		audiences = []string{src.Audience}
	}
	token, refresh, err := a.requestToken(ctx, pod, audiences, secs)
	if err != nil {
		return time.Time{}, err
	}
	if err := writeAtomic(filepath.Join(dir, src.Path), []byte(token)); err != nil {
		return time.Time{}, err
	}
	return refresh, nil
}

// issueWorkloadCert writes the pod's workload certificate and returns
// when to renew it (at 2/3 of its lifetime).
func (a *Agent) issueWorkloadCert(pod *corev1.Pod, dir string) (time.Time, error) {
	if a.workloadCA == nil {
		return time.Time{}, fmt.Errorf("the node agent has no workload CA (--workload-ca-cert, --workload-ca-key)")
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	domain := a.cfg.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	ttl := a.cfg.WorkloadCertTTL
	if ttl <= 0 {
		ttl = DefaultWorkloadCertTTL
	}
	issued := time.Now()
	if _, err := a.workloadCA.IssueDir(dir, "spiffe://"+domain+"/ns/"+pod.Namespace+"/sa/"+sa, ttl); err != nil {
		return time.Time{}, err
	}
	return issued.Add(ttl * 2 / 3), nil
}

// keepFresh calls renew at each time it returns until ctx ends, retrying
// failures with a growing pause.
func (a *Agent) keepFresh(ctx context.Context, pod *corev1.Pod, what string, next time.Time, renew func(context.Context) (time.Time, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		var err error
		for attempt := 0; ; attempt++ {
			if next, err = renew(ctx); err == nil {
				break
			}
			a.log.Warn("renew "+what, "pod", key(pod.Namespace, pod.Name), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(min(attempt+1, 30)) * time.Second):
			}
		}
	}
}
