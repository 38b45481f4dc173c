package gatewaytest

import (
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"os"
)

// STOWBody streams files as a STOW-RS multipart/related body (one
// application/dicom part per file) and returns it with its content type.
func STOWBody(files []string) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for _, name := range files {
			h := textproto.MIMEHeader{}
			h.Set("Content-Type", "application/dicom")
			w, err := mw.CreatePart(h)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			f, err := os.Open(name)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			_, err = io.Copy(w, f)
			f.Close()
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	return pr, fmt.Sprintf(`multipart/related; type="application/dicom"; boundary=%s`, mw.Boundary())
}
