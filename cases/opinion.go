package cases

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/consilium/consilium/storage"
)

// MaxPDF bounds an opinion's PDF.
const MaxPDF = 32 << 20

// Opinion is a specialist's opinion on a case, as submitted: the
// DiagnosticReport references the pseudonymous patient of the packet.
// The gateway re-identifies it when the hospital reads it.
type Opinion struct {
	Case       string          `json:"case"`
	Specialist string          `json:"specialist"`
	Received   time.Time       `json:"received"`
	Version    int             `json:"version"`
	Report     json.RawMessage `json:"report"`
	// PDFSize is the size of the attached PDF, 0 when none.
	PDFSize int64 `json:"pdf_size,omitempty"`
}

func opinionName(caseID, specialist, ext string) string {
	return opinionPrefix + caseID + "/" + specialist + ext
}

// PutOpinion stores o (and its PDF, when pdf is not nil), replacing the
// specialist's previous opinion on the case. The PDF is stored first, so
// that an opinion never names a PDF that is not there.
func (st *Store) PutOpinion(ctx context.Context, o *Opinion, pdf []byte) error {
	if !ValidID(o.Case) || !validPrincipalID(o.Specialist) {
		return fmt.Errorf("%w: opinion of %q on %q", ErrInvalid, o.Specialist, o.Case)
	}
	if prev, err := st.Opinion(ctx, o.Case, o.Specialist); err == nil {
		o.Version = prev.Version + 1
	} else if errors.Is(err, ErrNotFound) {
		o.Version = 1
	} else {
		return err
	}
	o.PDFSize = int64(len(pdf))
	if pdf != nil {
		if _, err := st.s.Put(ctx, opinionName(o.Case, o.Specialist, ".pdf"), bytes.NewReader(pdf), storage.PutOptions{
			Size: int64(len(pdf)), ContentType: "application/pdf",
		}); err != nil {
			return fmt.Errorf("cases: storing the opinion's PDF: %w", err)
		}
	}
	return putJSON(ctx, st.s, opinionName(o.Case, o.Specialist, ".json"), o)
}

// Opinion returns the opinion of specialist on the case, or ErrNotFound.
func (st *Store) Opinion(ctx context.Context, caseID, specialist string) (*Opinion, error) {
	if !ValidID(caseID) || !validPrincipalID(specialist) {
		return nil, ErrNotFound
	}
	var o Opinion
	if _, err := readJSON(ctx, st.s, opinionName(caseID, specialist, ".json"), &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// OpinionPDF returns the PDF of an opinion.
func (st *Store) OpinionPDF(ctx context.Context, o *Opinion) ([]byte, error) {
	rc, _, err := st.s.Get(ctx, opinionName(o.Case, o.Specialist, ".pdf"), storage.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("cases: reading an opinion's PDF: %w", err)
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, MaxPDF))
}

// Opinions returns the opinions on a case, in specialist order.
func (st *Store) Opinions(ctx context.Context, caseID string) ([]*Opinion, error) {
	var out []*Opinion
	prefix := opinionPrefix + caseID + "/"
	for info, err := range st.s.List(ctx, prefix) {
		if err != nil {
			return nil, fmt.Errorf("cases: listing opinions: %w", err)
		}
		name := strings.TrimPrefix(info.Name, prefix)
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		o, err := st.Opinion(ctx, caseID, strings.TrimSuffix(name, ".json"))
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}
