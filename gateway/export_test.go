package gateway

import (
	"errors"
	"net/http"

	"github.com/consilium/consilium/audit"
)

// TestOnlyCommitHandler returns a handler built as routes are (observe,
// wrap) for a pretend mutating operation that follows the documented
// fail-closed pattern: it commits its audit entry with status 201 before
// answering 201. With ?fail=1 the operation fails after the commit.
func (s *Server) TestOnlyCommitHandler() http.Handler {
	return s.observe(s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		setAuditAction(r, "test.create")
		setAuditTarget(r, audit.Target{Case: "c-42", Patient: "p-7f3a"})
		setAuditDecision(r, audit.Decision{Allow: true, Reasons: []string{"test"}, PolicyVersion: "v1"})
		if err := s.auditCommit(r, http.StatusCreated); err != nil {
			return err
		}
		if r.URL.Query().Get("fail") != "" {
			return errors.New("the operation failed after its entry was committed")
		}
		writeJSON(w, http.StatusCreated, map[string]string{"status": "created"})
		return nil
	}))
}

// PacketRange exposes packetRange to the fuzz test.
func PacketRange(r *http.Request, etag string, size int64) (start, length int64, partial bool, err error) {
	return packetRange(r, etag, size)
}
