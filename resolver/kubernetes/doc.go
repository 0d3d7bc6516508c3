// Package kubernetes is a gRPC name resolver for Kubernetes Services that
// watches EndpointSlices through the apiserver instead of asking DNS.
//
// Importing the package registers the "kubernetes" scheme:
//
//	kubernetes:///name.namespace:port
//	kubernetes:///name:port          (the client's own namespace)
//
// where port is a Service port name (e.g. "grpc") or an endpoint port
// number (the pod's port, as EndpointSlices list it). A target with an
// authority (kubernetes://host/...) is refused: the resolver watches the
// cluster of its kubeconfig or pod, never another. Every EndpointSlice
// of the Service is merged (Services with more than 100 endpoints have
// several), and each change reaches the balancer as soon as the informer
// delivers it: no 30-second DNS re-resolution after a rollout or scale-up.
//
// Endpoint conditions are honoured: ready endpoints are used; when none is
// ready, endpoints that are serving but terminating are used so that a
// Service in the middle of a full rollout keeps working; the rest are
// dropped. Zone, node, pod name and zone hints travel as endpoint
// attributes (see EndpointInfo), and WithZone prefers same-zone
// endpoints.
//
// Credentials come from the in-cluster config (the pod's service-account
// token, which client-go re-reads as the kubelet rotates it) or, outside a
// cluster, from the kubeconfig (KUBECONFIG or ~/.kube/config), so the same
// target works from a laptop against the local cluster. The client needs
// get/list/watch on endpointslices.discovery.k8s.io in the Service's
// namespace; without it the resolver reports an error naming that rule.
package kubernetes
