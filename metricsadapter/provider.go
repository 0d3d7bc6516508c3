package metricsadapter

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// MaxScrapeBytes bounds what the adapter reads of one pod's /metrics: a
// hostile or broken pod must not exhaust it.
const MaxScrapeBytes = 8 << 20

// ErrTooLarge is ReadExposition's error for a /metrics past
// MaxScrapeBytes.
var ErrTooLarge = fmt.Errorf("more than %d bytes", MaxScrapeBytes)

// ReadExposition reads a pod's /metrics from r, up to MaxScrapeBytes; a
// longer one is ErrTooLarge. Whatever reads pods' metrics (the adapter,
// kuberpc status) reads them through it.
func ReadExposition(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxScrapeBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxScrapeBytes {
		return nil, ErrTooLarge
	}
	return b, nil
}

// Provider serves the Store's values as custom.metrics.k8s.io for pods.
type Provider struct {
	pods  listersv1.PodLister
	store *Store
	// Interval between scrapes of each pod.
	interval time.Duration
	client   *http.Client
}

var _ provider.CustomMetricsProvider = (*Provider)(nil)

// NewProvider returns a provider reading pods from lister, averaging over
// window, scraping every interval.
func NewProvider(pods listersv1.PodLister, window, interval time.Duration) *Provider {
	return &Provider{
		pods: pods, store: NewStore(window), interval: interval,
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
			MaxIdleConnsPerHost: 1, DisableCompression: true,
		}},
	}
}

// podKey identifies a pod's series; a pod recreated under the same name
// starts a new one.
func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name + "/" + string(p.UID) }

// MetricsPort returns the pod's container port named "metrics", where a
// kuberpc server serves its Prometheus metrics.
func MetricsPort(p *corev1.Pod) (int32, bool) {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "metrics" {
				return port.ContainerPort, true
			}
		}
	}
	return 0, false
}

// Run scrapes every running pod with a metrics port each interval until
// ctx ends.
func (p *Provider) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.scrapeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scrapeAll scrapes the pods at once, at most 16 at a time.
func (p *Provider) scrapeAll(ctx context.Context) {
	pods, err := p.pods.List(labels.Everything())
	if err != nil {
		return
	}
	live := map[string]bool{}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, pod := range pods {
		port, ok := MetricsPort(pod)
		if !ok || pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
			continue
		}
		key := podKey(pod)
		live[key] = true
		url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))) + "/metrics"
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s, err := p.scrape(ctx, url)
			p.store.Add(key, s, err)
		}()
	}
	wg.Wait()
	p.store.Forget(func(k string) bool { return live[k] })
}

func (p *Provider) scrape(ctx context.Context, url string) (Sample, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return Sample{}, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return Sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Sample{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := ReadExposition(resp.Body)
	if err != nil {
		return Sample{}, fmt.Errorf("%s: %w", url, err)
	}
	return ParseSample(b, time.Now())
}

var podsResource = schema.GroupResource{Resource: "pods"}

// value is the MetricValue of metric for pod, or false.
func (p *Provider) value(pod *corev1.Pod, metric string) (custom_metrics.MetricValue, bool) {
	v, ok := p.store.Get(podKey(pod), metric)
	if !ok {
		return custom_metrics.MetricValue{}, false
	}
	window := int64(v.Window.Round(time.Second).Seconds())
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       metav1.NewTime(v.At),
		WindowSeconds:   &window,
		Value:           *resource.NewMilliQuantity(int64(v.Value*1000), resource.DecimalSI),
	}, true
}

// check rejects what the adapter does not serve with a message naming
// what it does.
func check(info provider.CustomMetricInfo) error {
	if info.GroupResource != podsResource {
		return apierrors.NewNotFound(info.GroupResource, fmt.Sprintf("%s (the kuberpc adapter serves pods' metrics only)", info.Metric))
	}
	for _, m := range Metrics {
		if info.Metric == m {
			return nil
		}
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: fmt.Sprintf("the kuberpc adapter has no metric %q for pods; it serves %v", info.Metric, Metrics),
	}}
}

// GetMetricByName returns metric for one pod.
func (p *Provider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValue, error) {
	if err := check(info); err != nil {
		return nil, err
	}
	pod, err := p.pods.Pods(name.Namespace).Get(name.Name)
	if err != nil {
		return nil, err
	}
	v, ok := p.value(pod, info.Metric)
	if !ok {
		return nil, p.notFound(pod, info)
	}
	return &v, nil
}

// notFound says why a pod has no value.
func (p *Provider) notFound(pod *corev1.Pod, info provider.CustomMetricInfo) error {
	why := "not scraped twice yet"
	if _, ok := MetricsPort(pod); !ok {
		why = "it has no container port named metrics"
	} else if err := p.store.Err(podKey(pod)); err != nil {
		why = "its metrics endpoint failed: " + err.Error()
	} else if v, ok := p.store.compute(podKey(pod), info.Metric); ok && !inRange(v.Value) {
		why = fmt.Sprintf("its value %g is out of the range the API serves, 0 to %d", v.Value, int64(MaxValue))
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: fmt.Sprintf("no %s for pod %s/%s: %s", info.Metric, pod.Namespace, pod.Name, why),
	}}
}

// GetMetricBySelector returns metric for the pods of namespace that
// selector matches and that have a value.
func (p *Provider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValueList, error) {
	if err := check(info); err != nil {
		return nil, err
	}
	pods, err := p.pods.Pods(namespace).List(selector)
	if err != nil {
		return nil, err
	}
	list := &custom_metrics.MetricValueList{}
	for _, pod := range pods {
		if v, ok := p.value(pod, info.Metric); ok {
			list.Items = append(list.Items, v)
		}
	}
	if len(list.Items) == 0 {
		return nil, provider.NewMetricNotFoundForSelectorError(podsResource, info.Metric, "*", selector)
	}
	return list, nil
}

// ListAllMetrics lists the served metrics.
func (p *Provider) ListAllMetrics() []provider.CustomMetricInfo {
	out := make([]provider.CustomMetricInfo, 0, len(Metrics))
	for _, m := range Metrics {
		out = append(out, provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: m})
	}
	return out
}
