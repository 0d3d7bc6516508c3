package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HTTPHandler returns the handler of the metrics port:
//
//   - /metrics: Prometheus metrics;
//   - /readyz: 200 while the server's overall gRPC health is SERVING, 503
//     otherwise (before Serve and during drain);
//   - /healthz: 200 until the server has stopped (liveness must not fail
//     during drain, or the kubelet kills a draining pod).
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		st := s.servingStatus("")
		if st != healthpb.HealthCheckResponse_SERVING {
			http.Error(w, st.String(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("SERVING\n"))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.shutdownDone:
			http.Error(w, "stopped", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	return mux
}

func (s *Server) servingStatus(service string) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := s.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	}
	return resp.GetStatus()
}

// ServeHTTP serves HTTPHandler on lis until Shutdown, then returns nil.
func (s *Server) ServeHTTP(lis net.Listener) error {
	h := &http.Server{Handler: s.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		lis.Close()
		return ErrServerStopped
	}
	s.httpSrvs = append(s.httpSrvs, h)
	s.mu.Unlock()
	s.log.Info("serving metrics", "addr", lis.Addr().String())
	if err := h.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
