// Package certs is Consilium's certificate authority and the source of
// caller identity. Every API call is authenticated by a client certificate
// that this CA issued; the certificate's subject carries the principal (see
// [Principal]), so the gateway needs no user database.
//
// Start with [Init] (a new CA in a folder) or [Load] (an existing one), then
// [Authority.IssueClient], [Authority.IssueServer] and [Authority.Revoke].
// Servers use [NewServerTLS], which builds a TLS 1.3 configuration that
// verifies client certificates against the CA and refuses revoked serials at
// the handshake, re-reading the CA's revocation list while running.
//
// All keys are ECDSA P-256 so that curl, browsers and every TLS stack
// accept them. A CA folder holds:
//
//	ca.pem   the CA certificate (give it to clients and servers)
//	ca.key   the CA private key (0600; keep it offline in production)
//	crl.pem  the certificate revocation list, signed by the CA
package certs
