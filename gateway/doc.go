// Package gateway is Consilium's HTTP server: the only way in. It
// terminates TLS 1.3, reads the caller's [certs.Principal] from the
// verified client certificate, bounds every request (body size, header and
// body read timeouts, write progress), logs each request without patient
// data, counts it for Prometheus, and routes it to the handler that owns
// the resource.
//
// Start with [New] and [Server.Serve]. Every route is registered in one
// place, routes.go; every error becomes an HTTP status in one place,
// errors.go. Handlers never decide statuses ad hoc: they return errors.
package gateway
